"""What the command prints for an exception: one or two lines, the problem and the fix.

The command never shows a traceback. Errors the library raises already name
their fix; the database's own errors (a missing folder, a file that is not a
database, a server that is down) are put in the same words here.

>>> print(explain(FileNotFoundError(2, "No such file or directory", "order.json")))
cannot read order.json: No such file or directory; check the path
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from statesaga.errors import StateSagaError

__all__ = ["DatabaseTrouble", "explain", "explained"]


class DatabaseTrouble(StateSagaError):
    """The database refused (missing, not a database, down): the message says what to do."""


@contextmanager
def explained(url: str) -> Iterator[None]:
    """Turn the database's own errors met inside into a :class:`DatabaseTrouble` about ``url``."""
    try:
        yield
    except Exception as error:
        message = _database_error(error, url)
        if message is None:
            raise
        raise DatabaseTrouble(message) from None


_PG_NO_DATABASE = re.compile(r'database "([^"]+)" does not exist')
_PG_REFUSED = re.compile(
    r'server at "([^"]+)"(?: \([^)]*\))?, port (\d+) failed: Connection refused'
)


def explain(error: BaseException, url: str | None = None) -> str:
    """The message to print for ``error``, met while working on the store at ``url``."""
    if isinstance(error, DatabaseTrouble):
        return str(error)
    if type(error) is StateSagaError:  # the command's own complaint: the message says it all
        return str(error)
    if isinstance(error, StateSagaError):
        return f"{type(error).__name__}: {error}"
    if isinstance(error, OSError) and error.filename is not None:
        return f"cannot read {error.filename}: {error.strerror}; check the path"
    database = _database_error(error, url)
    if database is not None:
        return database
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (
        f"unexpected {type(error).__name__}: {first}\n"
        "this is a bug in statesaga: set STATESAGA_TRACEBACK=1 to see where, and report it"
    )


def _database_error(error: BaseException, url: str | None) -> str | None:
    """The database's own complaint (through SQLAlchemy) in the command's words."""
    try:
        from sqlalchemy.exc import DBAPIError
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return None
    if not isinstance(error, DBAPIError):
        return None
    said = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
    where = _shown(url)
    if "unable to open database file" in said:
        return (
            f"cannot open the SQLite database {where}: its folder does not exist or is not "
            "writable; create the folder, or pass --db the URL of another file"
        )
    if "file is not a database" in said:
        return (
            f"{where} is not a SQLite database; pass --db the store's URL "
            "(a new file name makes a new store)"
        )
    found = _PG_NO_DATABASE.search(str(error.orig))
    if found is not None:
        return (
            f'the PostgreSQL server has no database "{found.group(1)}"; create it '
            f"(createdb {found.group(1)}), or pass --db the URL of an existing one"
        )
    found = _PG_REFUSED.search(str(error.orig))
    if found is not None or "Connection refused" in said:
        address = f"{found.group(1)}:{found.group(2)}" if found else where
        return (
            f"cannot connect to the database at {address} (connection refused); start the "
            "server, or pass --db the URL of a running one"
        )
    return f"the database at {where} said: {said}\ncheck --db and the database's state"


def _shown(url: str | None) -> str:
    """The store's URL without its password, or the SQLite file it names."""
    if url is None:
        return "the store"
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:
        return url
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return parsed.database
    return parsed.render_as_string(hide_password=True)
