"""How the `labelq` command reports a failure: one line on stderr that says what failed, where, and what to do,
and an exit code from the one table, README.md "Errors and exit codes" (the constants below are its numbers;
tests/labelq/test_exit_codes.py checks both); `--debug` (or LABELQ_DEBUG=1) shows the traceback instead, with
the same exit code.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click
import pydantic
import redis

EXIT_USAGE = 2
EXIT_REDIS = 3
EXIT_MODEL = 4
EXIT_INTERNAL = 70

REDIS_HINT = "start it, or point LABELQ_REDIS_URL (or --redis-url) at one"
FLEET_HINT = "start it, or correct LABELQ_REDIS_SHARDS (or give --redis-url)"


def redis_hint() -> str:
    """What to do about a Redis that does not answer: the variable that named it (a fleet's servers come from
    LABELQ_REDIS_SHARDS)."""
    from worker.connections import url_setting

    return FLEET_HINT if url_setting() == "LABELQ_REDIS_SHARDS" else REDIS_HINT


def describe(exc: BaseException) -> tuple[str, int]:
    """The one line and exit code for a failure no command handled itself."""
    from producer.client import BROKER_ERRORS, AccessDenied, PasswordRefused, SubmitError, WrongKeyType
    from schemas.transport import ACL_DOCS, RedisURLError, database_missing, permission_denied, wrong_type
    from worker.connections import RedisRefused, url_setting
    from worker.errors import ConfigError, InputError, ModelError

    if isinstance(exc, RedisRefused):  # a worker's start-up check: the password or user was refused
        return str(exc), EXIT_REDIS
    own_line = isinstance(exc, RedisURLError | ConfigError) and "DB index" in str(exc)  # it names the /N already
    if own_line and isinstance(exc, ConfigError):
        return str(exc), EXIT_USAGE
    missing = str(exc) if own_line else database_missing(exc)
    if missing:  # the URL's /N is past the server's databases: a setting, whichever command met it
        return f"{missing}; fix it in {url_setting()} (or --redis-url)", EXIT_USAGE
    if isinstance(exc, AccessDenied):  # says what it could not send, and where the grants are
        return str(exc), EXIT_USAGE
    refused = permission_denied(exc)
    if refused:
        return (
            f"the Redis user in {url_setting()} lacks a permission ({refused}); grant the ACL in {ACL_DOCS}",
            EXIT_USAGE,
        )
    if isinstance(exc, RedisURLError):
        if "sentinel" in str(exc):
            return f"{exc}; set LABELQ_REDIS_TRANSPORT_OPTIONS=master_name=...", EXIT_USAGE
        if "URL parameter" in str(exc):
            return f"{exc}; fix it in {url_setting()} (or --redis-url)", EXIT_USAGE
        return f"{exc}; set LABELQ_REDIS_URL (or --redis-url) to redis://host:port/db", EXIT_USAGE
    if isinstance(exc, PasswordRefused):  # says where, and never the password
        return str(exc), EXIT_REDIS
    if isinstance(exc, WrongKeyType):  # names the key and its type; sending there cannot succeed
        return str(exc), EXIT_USAGE
    if wrong_type(exc):  # a WRONGTYPE no command named: still a key of another type, not a password or a network
        return (
            f"a Redis key holds another type than labelq keeps there ({exc}); find it with redis-cli TYPE, and move "
            "it or give labelq a database of its own (the /N of the Redis URL)",
            EXIT_USAGE,
        )
    if isinstance(exc, SubmitError):
        return f"{exc}; {redis_hint()}", EXIT_REDIS
    if isinstance(exc, BROKER_ERRORS):
        return f"Redis unreachable ({exc}); {redis_hint()}", EXIT_REDIS
    if isinstance(exc, redis.AuthenticationError | redis.ResponseError):
        return f"Redis refused the command ({exc}); check the password and database in {url_setting()}", EXIT_REDIS
    if isinstance(exc, ModelError):
        return f"model: {exc}", EXIT_MODEL
    if isinstance(exc, InputError | ConfigError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, pydantic.ValidationError):
        if exc.title == "Settings":  # settings: named as the environment variables the user set
            from worker.settings import settings_problem

            return settings_problem(exc), EXIT_USAGE
        first = exc.errors()[0]
        loc = first.get("loc", ())
        where = ".".join(str(part) for part in loc) or "settings"
        return f"invalid setting {where}: {first.get('msg')} (LABELQ_* environment variables)", EXIT_USAGE
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON at line {exc.lineno}: {exc.msg}", EXIT_USAGE
    if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
        return f"{exc.strerror}: {exc.filename}", EXIT_USAGE
    return (
        f"internal error ({type(exc).__name__}: {exc}); run again as `labelq --debug <command>` (or with "
        "LABELQ_DEBUG=1) and report it",
        EXIT_INTERNAL,
    )


class ReportingGroup(click.Group):
    """A click group whose subcommands' failures become one line and an exit code (see the module docstring).
    Before a subcommand runs (not for its --help), the environment's `LABELQ_*` names are checked: a misspelt one
    is one line and exit 2, not a setting silently left at its default (worker/settings.py, check_environment)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if not ctx.resilient_parsing and not any(arg in ctx.help_option_names for arg in rest):
            from worker.settings import check_environment

            check_environment()
        return name, command, rest

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except BrokenPipeError:  # the reader of stdout is gone (`labelq demo | head`): a quiet end, as `yes | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            ctx.exit(0)
        except Exception as exc:
            message, code = describe(exc)
            if ctx.params.get("debug"):  # the traceback instead of the line; the exit code stays the documented one
                traceback.print_exception(exc, file=sys.stderr)
            else:
                click.echo(f"error: {message}", err=True)
            ctx.exit(code)
