"""The CLI's one error boundary: every failure a person can act on becomes one or two lines.

`explained()` wraps a command as httpx's `map_httpcore_exceptions` wraps a request: what the
database driver, the settings or a mistyped flag raise is turned into `Refusal` (a message that
names the cause and the fix, and an exit code). `--debug` keeps the traceback instead.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from pydantic import ValidationError

from firstparty.errors import ConfigError

# Exit codes: 2 a setting or argument to fix, 3 the database cannot be used, 1 anything else.
USAGE, DATABASE, OTHER = 2, 3, 1


@dataclass(frozen=True)
class Refusal(Exception):
    """What to print (without a traceback) and the exit code."""

    message: str
    code: int


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    advice: str  # format string over the pattern's named groups


# Driver messages (psycopg, PyMySQL, sqlite3) a person can act on, and what to do about each.
DATABASE_RULES = (
    Rule(
        re.compile(r'database "(?P<name>[^"]+)" does not exist'),
        'database "{name}" does not exist: create it with `createdb {name}` '
        "(or CREATE DATABASE {name}), then run `firstparty migrate`",
    ),
    Rule(
        re.compile(r"Unknown database '(?P<name>[^']+)'"),
        "database '{name}' does not exist: create it with "
        "`mysql -e 'CREATE DATABASE {name} CHARACTER SET utf8mb4'`, then run `firstparty migrate`",
    ),
    Rule(
        re.compile(r'role "(?P<name>[^"]+)" does not exist|password authentication failed'),
        "the database refused the user or password in database_url: check them",
    ),
    Rule(
        re.compile(r"Access denied for user (?P<name>\S+)"),
        "the database refused the user {name}: check the user and password in database_url",
    ),
    Rule(
        re.compile(
            r'server at "(?P<host>[^"]+)", port (?P<port>\d+) failed: Connection refused'
            r"|Can't connect to MySQL server on '(?P<mhost>[^']+)'"
        ),
        "cannot reach the database ({where}): is it running, and is database_url right?",
    ),
    Rule(
        re.compile(r"unable to open database file"),
        "cannot open the SQLite database file: does its folder exist and is it writable?",
    ),
)


@contextlib.contextmanager
def explained(*, debug: bool = False) -> Iterator[None]:
    """Map what a command raises to a `Refusal`; with `debug`, let it through untouched."""
    if debug:
        yield
        return
    try:
        yield
    except ConfigError as exc:
        raise Refusal(str(exc), USAGE) from None
    except ValidationError as exc:
        raise Refusal(_validation(exc), USAGE) from None
    except sa.exc.OperationalError as exc:
        raise Refusal(_database(exc), DATABASE) from None
    except (sa.exc.ProgrammingError, sa.exc.InterfaceError) as exc:
        raise Refusal(f"the database failed: {_first_line(exc)}", DATABASE) from None


def _database(exc: sa.exc.OperationalError) -> str:
    text = str(exc.orig)
    for rule in DATABASE_RULES:
        found = rule.pattern.search(text)
        if found:
            groups = {k: v or "" for k, v in found.groupdict().items()}
            where = f"{groups.get('host') or groups.get('mhost')}:{groups.get('port') or ''}"
            return rule.advice.format(where=where.rstrip(":"), **groups)
    return f"the database failed: {_first_line(exc)}"


def _validation(exc: ValidationError) -> str:
    """Every error, each naming its field; "characters" for strings (pydantic says "items")."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(value)"
        parts.append(f"{field}: {_plain(err['msg'])}")
    return "; ".join(parts)


def _plain(message: str) -> str:
    return message.replace("Value error, ", "")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
