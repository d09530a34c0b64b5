"""How every CLI command ends: an exit code and, on a failure, one line.

Exit codes: 0 ok, 1 a job-level failure (e.g. cancel of a finished job, a
watched job that died, a database refusal), 2 a usage or input error. No
command ends in a traceback unless PGJOBS_DEBUG is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

import click
import psycopg

from pgjobs import diagnose
from pgjobs.diagnose import SetupError
from pgjobs.errors import AccessDenied, InvalidJob, InvalidTransition, JobNotFound, PgJobsError
from pgjobs.terminal import printable

EXIT_JOB_FAILURE = 1
EXIT_USAGE = 2


def _fail(code: int, message: str) -> NoReturn:
    # One line, and no control character from a name or message reaches the terminal.
    click.echo(f"error: {printable(message.strip())}", err=True)
    sys.exit(code)


def run(fn: Callable[[], int | None]) -> None:
    """Maps every failure to an exit code and one line on stderr (never a
    traceback, unless PGJOBS_DEBUG is set)."""
    try:
        code = fn()
    except (InvalidJob, ValueError, OverflowError, UnicodeError) as exc:
        _fail(EXIT_USAGE, str(exc))
    except (InvalidTransition, JobNotFound, AccessDenied) as exc:
        _fail(EXIT_JOB_FAILURE, str(exc))
    except SetupError as exc:
        _fail(EXIT_USAGE, str(exc))
    except psycopg.Error as exc:
        # A bad DSN, a database never migrated: one line saying what to do.
        message = diagnose.explain(exc)
        if message is not None:
            _fail(EXIT_USAGE, message)
        _database_failure(exc)
    except PgJobsError as exc:
        _fail(EXIT_JOB_FAILURE, str(exc))
    except Exception as exc:
        if os.environ.get("PGJOBS_DEBUG"):
            raise
        _fail(
            EXIT_JOB_FAILURE,
            f"{type(exc).__name__}: {exc} (set PGJOBS_DEBUG=1 for the traceback)",
        )
    sys.exit(code or 0)


def _database_failure(exc: psycopg.Error) -> NoReturn:
    if isinstance(exc, psycopg.OperationalError):
        # Above all a --dsn / PGJOBS_DSN that does not connect: an input error.
        _fail(EXIT_USAGE, f"database: {exc}")
    _fail(EXIT_JOB_FAILURE, f"database: {exc.diag.message_primary or exc}")


class OneLineErrors(click.Group):
    """Click's own usage errors (a bad option value, a missing argument) in one
    line with exit 2, like every other input error, instead of a usage block."""

    def main(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        try:
            super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else self.name
            _fail(EXIT_USAGE, f"{exc.format_message()} (see {where} --help)")
        except click.ClickException as exc:
            _fail(exc.exit_code, exc.format_message())
        except click.exceptions.Abort:
            _fail(EXIT_JOB_FAILURE, "aborted")
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        sys.exit(0)
