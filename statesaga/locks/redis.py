"""Entity leases in Redis: ``SET key token NX PX``, Lua compare-and-extend and compare-and-delete.

A lease is one Redis key, ``{namespace}{entity key}``, whose value is the
lease's random token and whose expiry Redis keeps. Renewing and releasing are
Lua scripts that touch the key only while it still holds the caller's token,
so a holder that lost its lease (it expired and someone else took it) cannot
extend or delete the new holder's.

Redis keeps its own time: the ``ttl`` becomes the key's ``PX``, and the
``expires_at`` of the returned :class:`Lease` is the engine's ``now + ttl``,
for the engine's bookkeeping only.

An unreachable Redis raises :class:`LocksUnavailable` within about one
connect or command timeout (1 s with the defaults; about twice that for
:class:`AsyncRedisLocks`, which sends a timed-out command once more), before
anything is written. Losing a key on a Redis failover can let a second run in; the
store's guards (one open instance per entity key, the epoch compare-and-set
on every transition) keep that from doing harm.

This module imports ``redis`` (the ``statesaga[redis]`` extra); ``import
statesaga`` does not load it.
"""

from __future__ import annotations

import logging
import math
import queue
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from statesaga.errors import LocksUnavailable
from statesaga.locks.base import Lease

__all__ = ["AsyncRedisLocks", "RedisLocks"]

log = logging.getLogger("statesaga.locks")

DEFAULT_NAMESPACE = "statesaga:lock:"
#: connections to Redis a lock client made from a URL opens at most
DEFAULT_MAX_CONNECTIONS = 100
#: seconds a lock operation waits for one of them when all are busy
DEFAULT_POOL_TIMEOUT = 10.0

# PEXPIRE / DEL only while the key still holds the caller's token
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# the same over many keys: KEYS[i] extended by ARGV[1] ms while it holds token ARGV[i + 1]
_EXTEND_MANY = """
local extended = {}
for i, key in ipairs(KEYS) do
    if redis.call('GET', key) == ARGV[i + 1] then
        extended[i] = redis.call('PEXPIRE', key, ARGV[1])
    else
        extended[i] = 0
    end
end
return extended
"""
#: keys per script call in ``renew_many``: short enough not to stall Redis for others
RENEW_MANY_KEYS = 1000
_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLocks:
    """Entity leases in Redis, shared by every process that points at the same server.

    Args:
        client_or_url: a ``redis://`` (or ``rediss://``, ``unix://``) URL, or a
            ``redis.Redis`` client to use as it is configured (its timeouts and
            retries apply, and ``close`` leaves it open).
        namespace: prefix of every Redis key, so that several applications
            (or test runs) can share one server.
        connect_timeout: seconds to wait for a connection to Redis.
        timeout: seconds to wait for Redis to answer a command.
        max_connections: connections to Redis open at most (of a client made
            from a URL); more lock operations at once each wait for one.
        pool_timeout: seconds a lock operation waits for a free connection
            before :class:`LocksUnavailable` says they all stayed busy.

    A command whose connection breaks is retried once, on a new connection; a
    command that times out is not. So a Redis that cannot be reached raises
    :class:`LocksUnavailable` within about ``max(connect_timeout, timeout)``
    seconds.

    >>> locks = RedisLocks("redis://127.0.0.1:6379/0", namespace="shop:lock:")
    >>> locks.key_for("cart:complete:42")
    'shop:lock:cart:complete:42'
    >>> locks.close()
    """

    def __init__(
        self,
        client_or_url: str | redis.Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        retry = Retry(_backoff(), 1, supported_errors=(RedisConnectionError,))
        pool = _Pool(max_connections, pool_timeout)
        client, self.url, self._owns_client = _client(
            redis.Redis, client_or_url, connect_timeout, timeout, retry, pool
        )
        self.pool = pool
        self.client: redis.Redis = client
        self.namespace = namespace
        # registered once: EVALSHA, loading the script only if the server lacks it
        self._extend = self.client.register_script(_EXTEND)
        self._extend_many = self.client.register_script(_EXTEND_MANY)
        self._delete = self.client.register_script(_DELETE)

    def key_for(self, key: str) -> str:
        """The Redis key that holds the lease on entity ``key``."""
        return self.namespace + key

    def try_acquire(self, key: str, owner: str, ttl: float, now: float) -> Lease | None:
        """Take the lease on ``key`` for ``ttl`` seconds, or ``None`` if someone holds it.

        Raises:
            LocksUnavailable: Redis cannot be reached.
        """
        name, token = self.key_for(key), uuid.uuid4().hex
        with _unavailable(self.url, self.pool, "take the lease on", key):
            if self.client.set(name, token, nx=True, px=_millis(ttl)):
                return Lease(key, owner, token, now + ttl)
            # a SET retried after a broken connection may find its own first attempt's token
            if _text(self.client.get(name)) == token:
                return Lease(key, owner, token, now + ttl)
        return None

    def renew(self, lease: Lease, ttl: float, now: float) -> Lease | None:
        """Extend a held lease by ``ttl`` seconds; ``None`` if it was lost.

        Raises:
            LocksUnavailable: Redis cannot be reached (the lease may still be held).
        """
        with _unavailable(self.url, self.pool, "renew the lease on", lease.key):
            extended = self._extend(
                keys=[self.key_for(lease.key)], args=[lease.token, _millis(ttl)]
            )
        if extended == 1:
            return Lease(lease.key, lease.owner, lease.token, now + ttl)
        return None

    def renew_many(self, leases: Sequence[Lease], ttl: float, now: float) -> list[Lease | None]:
        """Each lease extended by ``ttl`` seconds, or ``None`` where it was lost.

        One round trip: a pipeline of script calls of ``RENEW_MANY_KEYS`` keys
        each, every key compared with its token before it is extended.

        Raises:
            LocksUnavailable: Redis cannot be reached (the leases may still be held).
        """
        if not leases:
            return []
        with _unavailable(self.url, self.pool, "renew the leases on", leases[0].key):
            pipeline = self.client.pipeline(transaction=False)
            for keys, args in _batches(self.key_for, leases, ttl):
                self._extend_many(keys=keys, args=args, client=pipeline)
            answers = pipeline.execute()
        return _renewed(leases, answers, ttl, now)

    def release(self, lease: Lease) -> None:
        """Give the lease up; no error if it was already lost.

        Nor if Redis cannot be reached: release runs while a run finishes or
        unwinds, and failing there would hide the run's outcome. The key then
        expires on its own within its ttl.
        """
        try:
            self._delete(keys=[self.key_for(lease.key)], args=[lease.token])
        except RedisError as error:
            log.warning(
                "could not release the lease on %s at %s (%s); it expires within its ttl",
                lease.key,
                self.url,
                error,
            )

    def close(self) -> None:
        """Close the connections (of a client this object created from a URL)."""
        if self._owns_client:
            self.client.close()


class AsyncRedisLocks:
    """:class:`RedisLocks` for asyncio, over ``redis.asyncio``: the same methods, as coroutines.

    Unlike :class:`RedisLocks`, a command that times out is sent once more: an
    event loop that stalls past ``timeout`` (a long garbage collection with many
    runs in flight) sees Redis's answer only after its timer ran out. Every
    lock command is safe to repeat (a lease's token tells its holder apart), and
    an unanswering Redis raises :class:`LocksUnavailable` within about twice
    ``timeout``.

    >>> import asyncio
    >>> locks = AsyncRedisLocks("redis://127.0.0.1:6379/0", namespace="shop:lock:")
    >>> locks.key_for("cart:complete:42")
    'shop:lock:cart:complete:42'
    >>> asyncio.run(locks.aclose())
    """

    def __init__(
        self,
        client_or_url: str | redis.asyncio.Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        # a timeout too: on an event loop it may be the loop's stall (a long garbage
        # collection), not Redis's, and every lock command is safe to send again
        retry = AsyncRetry(
            _backoff(), 1, supported_errors=(RedisConnectionError, RedisTimeoutError)
        )
        pool = _Pool(max_connections, pool_timeout)
        client, self.url, self._owns_client = _client(
            redis.asyncio.Redis, client_or_url, connect_timeout, timeout, retry, pool
        )
        self.pool = pool
        self.client: redis.asyncio.Redis = client
        self.namespace = namespace
        self._extend = self.client.register_script(_EXTEND)
        self._extend_many = self.client.register_script(_EXTEND_MANY)
        self._delete = self.client.register_script(_DELETE)

    def key_for(self, key: str) -> str:
        """The Redis key that holds the lease on entity ``key``."""
        return self.namespace + key

    async def try_acquire(self, key: str, owner: str, ttl: float, now: float) -> Lease | None:
        """Take the lease on ``key`` for ``ttl`` seconds, or ``None`` if someone holds it."""
        name, token = self.key_for(key), uuid.uuid4().hex
        with _unavailable(self.url, self.pool, "take the lease on", key):
            if await self.client.set(name, token, nx=True, px=_millis(ttl)):
                return Lease(key, owner, token, now + ttl)
            if _text(await self.client.get(name)) == token:
                return Lease(key, owner, token, now + ttl)
        return None

    async def renew(self, lease: Lease, ttl: float, now: float) -> Lease | None:
        """Extend a held lease by ``ttl`` seconds; ``None`` if it was lost."""
        with _unavailable(self.url, self.pool, "renew the lease on", lease.key):
            extended = await self._extend(
                keys=[self.key_for(lease.key)], args=[lease.token, _millis(ttl)]
            )
        if extended == 1:
            return Lease(lease.key, lease.owner, lease.token, now + ttl)
        return None

    async def renew_many(
        self, leases: Sequence[Lease], ttl: float, now: float
    ) -> list[Lease | None]:
        """Each lease extended by ``ttl`` seconds, or ``None``: one pipelined round trip."""
        if not leases:
            return []
        with _unavailable(self.url, self.pool, "renew the leases on", leases[0].key):
            pipeline = self.client.pipeline(transaction=False)
            for keys, args in _batches(self.key_for, leases, ttl):
                await self._extend_many(keys=keys, args=args, client=pipeline)
            answers = await pipeline.execute()
        return _renewed(leases, answers, ttl, now)

    async def release(self, lease: Lease) -> None:
        """Give the lease up; no error if it was lost or Redis cannot be reached (it expires)."""
        try:
            await self._delete(keys=[self.key_for(lease.key)], args=[lease.token])
        except RedisError as error:
            log.warning(
                "could not release the lease on %s at %s (%s); it expires within its ttl",
                lease.key,
                self.url,
                error,
            )

    async def aclose(self) -> None:
        """Close the connections (of a client this object created from a URL)."""
        if self._owns_client:
            await self.client.aclose()


@attrs.frozen
class _Pool:
    """How many connections a client made from a URL opens, and how long one is waited for."""

    max_connections: int
    timeout: float

    def __attrs_post_init__(self) -> None:
        if self.max_connections < 1 or self.timeout <= 0:
            raise ValueError(
                f"max_connections={self.max_connections!r} must be at least 1 and "
                f"pool_timeout={self.timeout!r} above 0"
            )


def _pool_exhausted(error: RedisError) -> bool:
    """Every connection of the client's pool stayed busy (a blocking pool's wait ran out)."""
    # raised while handling the wait's own timeout (queue.Empty; asyncio's TimeoutError)
    cause = error.__cause__ or error.__context__
    return isinstance(error, RedisConnectionError) and isinstance(cause, queue.Empty | TimeoutError)


@contextmanager
def _unavailable(url: str, pool: _Pool, action: str, key: str) -> Iterator[None]:
    try:
        yield
    except RedisError as error:
        if _pool_exhausted(error):
            raise LocksUnavailable(
                f"cannot {action} {key!r}: every connection to Redis at {url} stayed busy "
                f"for {pool.timeout:g}s; raise max_connections (now {pool.max_connections}) "
                "or pool_timeout, or run fewer lock operations at once",
                key=key,
            ) from error
        raise LocksUnavailable(
            f"cannot {action} {key!r}: Redis at {url} is unavailable ({error}); check that "
            "Redis runs there and that the URL is right, or run without RedisLocks (the "
            "store's own leases still guard every entity)",
            key=key,
        ) from error


def _client(
    kind: Any, client_or_url: Any, connect_timeout: float, timeout: float, retry: Any, pool: _Pool
) -> tuple[Any, str, bool]:
    """(client, its description for messages, whether the locks own it and close it).

    A URL gets a client of ``kind`` (sync or asyncio) with bounded timeouts, one
    quick retry, and a blocking pool of ``pool.max_connections``: more commands
    at once wait for a connection instead of failing; a client given is used as
    it is.
    """
    if isinstance(client_or_url, str):
        blocking = (
            redis.asyncio.BlockingConnectionPool
            if kind is redis.asyncio.Redis
            else redis.BlockingConnectionPool
        )
        connections = blocking.from_url(
            client_or_url,
            max_connections=pool.max_connections,
            timeout=pool.timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            retry=retry,
        )
        client = kind.from_pool(connections)  # closing the client closes its pool
        return client, _redact(client_or_url), True
    return client_or_url, _describe(client_or_url.connection_pool.connection_kwargs), False


def _batches(
    key_for: Any, leases: Sequence[Lease], ttl: float
) -> Iterator[tuple[list[str], list[Any]]]:
    """(keys, [ttl in ms, tokens...]) for each script call of ``renew_many``."""
    millis = _millis(ttl)
    for start in range(0, len(leases), RENEW_MANY_KEYS):
        batch = leases[start : start + RENEW_MANY_KEYS]
        yield [key_for(lease.key) for lease in batch], [millis, *(lease.token for lease in batch)]


def _renewed(
    leases: Sequence[Lease], answers: Sequence[Any], ttl: float, now: float
) -> list[Lease | None]:
    """The leases the script calls extended (answer 1), renewed; ``None`` for the others."""
    flat = [answer for batch in answers for answer in batch]
    return [
        Lease(lease.key, lease.owner, lease.token, now + ttl) if extended == 1 else None
        for lease, extended in zip(leases, flat, strict=True)
    ]


def _backoff() -> ExponentialBackoff:
    # one quick retry rides out a dropped connection; RedisLocks does not retry a
    # timeout, which keeps an unanswering Redis to one timeout
    return ExponentialBackoff(cap=0.05, base=0.01)


def _millis(ttl: float) -> int:
    if ttl <= 0:
        raise ValueError(f"ttl={ttl!r} must be positive")
    return max(1, math.ceil(ttl * 1000))


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def _redact(url: str) -> str:
    """The URL without its password, fit for an error message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _describe(kwargs: dict[str, Any]) -> str:
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"
