"""The checkout deployed as docs/production.md says, on 127.0.0.1, for ``load_faults.py``.

One PostgreSQL schema of the deployment's own (made, migrated with ``statesaga
db upgrade``, dropped at the end), Redis database 0 (the locks' default
namespace; every cart id of the deployment starts with its own prefix, so its
lock keys are ``statesaga:lock:cart:complete:{prefix}...``), the provider
service, N API processes (``--workers 0 --threads 8``) and M ``statesaga
worker`` processes, each on a free port. Each process connects with an
``application_name`` of its own (a libpq parameter of the database URL), so
that the script can count and terminate this deployment's connections, and
only those. Processes are stopped by pid: SIGTERM, then SIGKILL after a grace
period.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from bench_common import ROOT, schema_url

from definitions.checkout.shop import cart_key
from statesaga.locks.redis import DEFAULT_NAMESPACE

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port of 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Deployment:
    """The processes of one checkout deployment, and what they share."""

    def __init__(self, apis: int = 3, workers: int = 2, threads: int = 8, concurrency: int = 2):
        self.tag = f"lf{os.getpid()}{uuid.uuid4().hex[:4]}"
        self.schema = f"load_{self.tag}"
        self.cart_prefix = f"{self.tag}-"
        self.secret = f"whsec_{secrets.token_hex(16)}"
        self.threads, self.concurrency = threads, concurrency
        self.api_ports = [free_port() for _ in range(apis)]
        self.provider_port = free_port()
        self.worker_count = workers
        self.logs = Path(tempfile.mkdtemp(prefix=f"statesaga-{self.tag}-"))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.admin = sa.create_engine(
            f"{POSTGRES}?application_name={self.tag}_script",
            isolation_level="AUTOCOMMIT",
            pool_size=2,
            max_overflow=2,
            pool_pre_ping=True,
        )
        self.db = sa.create_engine(
            schema_url(f"{POSTGRES}?application_name={self.tag}_script", self.schema),
            pool_size=4,
            max_overflow=4,
            pool_pre_ping=True,
        )

    # -- names --------------------------------------------------------------------------------

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    @property
    def provider_url(self) -> str:
        return f"http://127.0.0.1:{self.provider_port}"

    def app_names(self) -> list[str]:
        """The application_name of every process of the deployment (not the script's)."""
        return [name for name in self.processes if name != "provider"]

    def lock_key(self, cart_id: str) -> str:
        """The Redis key the engine's RedisLocks hold for a checkout of ``cart_id``."""
        return DEFAULT_NAMESPACE + cart_key(cart_id)

    def lock_pattern(self) -> str:
        return DEFAULT_NAMESPACE + cart_key(self.cart_prefix) + "*"

    def env(self, name: str) -> dict[str, str]:
        environ = dict(os.environ)
        environ.update(
            STATESAGA_DATABASE_URL=f"{POSTGRES}?application_name={self.tag}_{name}",
            STATESAGA_SCHEMA=self.schema,
            STATESAGA_REDIS_URL=REDIS,
            CHECKOUT_PROVIDER_URL=self.provider_url,
            CHECKOUT_WEBHOOK_SECRET=self.secret,
            PYTHONPATH=str(ROOT),
        )
        return environ

    # -- life ---------------------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[f"{self.tag}_{name}" if name != "provider" else name] = subprocess.Popen(
            command, cwd=ROOT, env=self.env(name), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def start(self) -> None:
        """Make the schema, migrate it, start every process and wait until each is healthy."""
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {self.schema}")
        subprocess.run(
            [str(BIN / "statesaga"), "db", "upgrade"],
            cwd=ROOT,
            env=self.env("upgrade"),
            check=True,
            capture_output=True,
        )
        python = sys.executable
        hooks = [f"--webhook-url={url}/payments/webhook" for url in self.api_urls]
        self._spawn(
            "provider",
            [
                python,
                "-m",
                "definitions.checkout.provider",
                "--port",
                str(self.provider_port),
                *hooks,
            ],
        )
        self._wait_http("provider", f"{self.provider_url}/payments")
        for index, port in enumerate(self.api_ports, 1):
            self._spawn(
                f"api{index}",
                [
                    python,
                    "-m",
                    "definitions.checkout.http",
                    "--port",
                    str(port),
                    "--workers",
                    "0",
                    "--threads",
                    str(self.threads),
                ],
            )
        for index in range(1, self.worker_count + 1):
            self._spawn(
                f"worker{index}",
                [
                    str(BIN / "statesaga"),
                    "worker",
                    "--saga",
                    "definitions.checkout:CompleteCart",
                    "--resources",
                    "definitions.checkout:resources",
                    "--concurrency",
                    str(self.concurrency),
                ],
            )
        for index, url in enumerate(self.api_urls, 1):
            self._wait_http(f"{self.tag}_api{index}", f"{url}/problems/cart-not-found")
        subprocess.run(
            [python, "-m", "definitions.checkout.http", "--seed-only"],
            cwd=ROOT,
            env=self.env("seed"),
            check=True,
            capture_output=True,
        )
        self._wait_workers()

    def _alive(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode}: see {self.logs}/"
                f"{name.removeprefix(self.tag + '_')}.log"
            )

    def _wait_http(self, name: str, url: str, limit: float = 90.0) -> None:
        deadline = time.monotonic() + limit
        while True:
            self._alive(name)
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {url} within {limit:g}s")
            time.sleep(0.2)

    def _wait_workers(self, limit: float = 90.0) -> None:
        """A worker is healthy once it polls the store: its connection shows in pg_stat_activity."""
        names = [n for n in self.app_names() if "_worker" in n]
        deadline = time.monotonic() + limit
        while True:
            for name in names:
                self._alive(name)
            if set(names) <= set(self.connections()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not reach the store within {limit:g}s")
            time.sleep(0.3)

    def connections(self) -> dict[str, int]:
        """Open connections of each process of the deployment (pg_stat_activity)."""
        with self.admin.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT application_name, count(DISTINCT client_port) FROM pg_stat_activity "
                    "WHERE application_name = ANY(:names) GROUP BY application_name"
                ),
                {"names": self.app_names()},
            )
            return {name: int(count) for name, count in rows}

    def terminate_backends(self) -> int:
        """pg_terminate_backend on this deployment's processes' backends only; how many."""
        with self.admin.connect() as connection:
            return len(
                connection.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = ANY(:names) AND pid <> pg_backend_pid()"
                    ),
                    {"names": self.app_names()},
                ).all()
            )

    def stop(self) -> dict[str, Any]:
        """SIGTERM every process started here (by pid), SIGKILL after 20 s; drop the schema."""
        codes: dict[str, Any] = {}
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                codes[name] = f"killed ({process.wait()})"
        self.db.dispose()
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.admin.dispose()
        return codes

    def log_lines(self, needle: str) -> dict[str, int]:
        """How many lines of each process's log contain ``needle``."""
        counts = {}
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace")
            counts[path.stem] = sum(needle in line for line in text.splitlines())
        return counts
