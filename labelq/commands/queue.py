"""`labelq submit`, `labelq submit-file`, `labelq results`, `labelq get` and `labelq wait`: sending requests and
reading results through the producer's `Client`, over every Redis server of LABELQ_REDIS_SHARDS when it is set."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import click

from labelq.commands.options import (
    FLEET_URL_OPTION,
    print_result,
    producer,
    request_from_flags,
)
from schemas import ClassificationResult, ErrorResult, parse_request


@click.command()
@click.argument("text")
@click.option("--labels", default=None, help="Comma-separated candidate labels (or --label-set)")
@click.option("--label-set", default=None, help="The name of a label set stored on the workers, instead of --labels")
@click.option("--multi-label", is_flag=True)
@click.option("--template", default=None, help="Hypothesis template containing {}")
@click.option("--reply-to", default=None, help="Result queue (a Redis list) to push the result onto")
@click.option("--queue", type=click.Choice(["realtime", "bulk"]), default="realtime", show_default=True)
@click.option("--wait", is_flag=True, help="Wait for the result and print it")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait with --wait")
@FLEET_URL_OPTION
def submit(
    text: str,
    labels: str | None,
    label_set: str | None,
    multi_label: bool,
    template: str | None,
    reply_to: str | None,
    queue: str,
    wait: bool,
    timeout_s: float,
    redis_url: str | None,
) -> None:
    """Send one request to the workers; print its id (or, with --wait, its result). Exit 1 when the request is
    refused, its result is an error, or (--wait) no result came within --timeout."""
    from pydantic import ValidationError

    from producer import WrongKeyType
    from schemas import error_from_validation
    from worker.errors import InputError

    with producer(redis_url) as client:
        try:
            request_id = client.submit(
                request_from_flags(text, labels, multi_label, template, reply_to=reply_to, label_set=label_set),
                queue=queue,
            )
        except ValidationError as exc:  # one line on stderr, as every command's refusal is
            print_result(error_from_validation(exc, None), as_json=False)
            sys.exit(1)
        except WrongKeyType as exc:  # a key of another type where the queue belongs: exit 2, not an outage
            raise InputError(str(exc)) from None
        if not wait:
            click.echo(request_id)
            return
        result = client.wait(request_id, timeout_s)
    if result is None:  # the command's own "no": nothing answered in time (is a worker running?)
        click.echo(
            f"error: no result for {request_id} within {timeout_s:g} s (is a labelq worker running? `labelq "
            "health`); the request stays queued and is answered when a worker takes it",
            err=True,
        )
        sys.exit(1)
    click.echo(result.model_dump_json(indent=2))
    sys.exit(1 if isinstance(result, ErrorResult) else 0)


@click.command("submit-file")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--queue", type=click.Choice(["realtime", "bulk"]), default="bulk", show_default=True)
@click.option("--reply-to", default=None, help="Result queue for lines that name none")
@FLEET_URL_OPTION
def submit_file(source: Path, queue: str, reply_to: str | None, redis_url: str | None) -> None:
    """Send every request in SOURCE (JSON lines, the wire format); invalid lines are reported, not sent, and the
    command exits 1 when there was any."""

    from producer import WrongKeyType
    from schemas import ClassifyRequest
    from worker.errors import InputError

    lines = [line for line in source.read_bytes().splitlines() if line.strip()]
    rejected: list[str] = []
    numbered: list[tuple[int, str]] = []  # (line number, request id) of each request handed to submit_many

    def valid(bar: Iterable[bytes]) -> Iterator[ClassifyRequest]:
        """The file's requests, read as submit_many takes them (it sends a round trip's worth at a time)."""
        for number, line in enumerate(bar, 1):
            parsed = parse_request(line, client.limits)
            if isinstance(parsed, ErrorResult):
                rejected.append(f"line {number}: {parsed.code.value} ({parsed.field}): {parsed.message}")
                continue
            request = parsed.request
            if reply_to and request.reply_to is None:
                request = request.model_copy(update={"reply_to": reply_to})
            numbered.append((number, request.id))
            yield request

    with producer(redis_url) as client, click.progressbar(lines, label="submitting", file=sys.stderr) as bar:
        try:
            sent = len(client.submit_many(valid(bar), queue=queue))
        except WrongKeyType as exc:  # every later line would fail alike: stop, saying how far it got
            raise InputError(
                f"{exc} (line {_first_unsent(numbered, exc.sent)}; {len(exc.sent)} sent before it)"
            ) from None
    for problem in rejected:
        click.echo(problem, err=True)
    click.echo(f"{sent} submitted to {queue}, {len(rejected)} rejected")
    sys.exit(1 if rejected else 0)  # a file with a bad line is not a success, though the good lines were sent


def _first_unsent(numbered: list[tuple[int, str]], sent: list[str]) -> int:
    """The line number of the first request handed over that did not go (over several servers the ones that went
    need not be the first ones); the last line handed over when all of them went."""
    left = Counter(sent)
    for number, request_id in numbered:
        if left[request_id] > 0:
            left[request_id] -= 1
        else:
            return number
    return numbered[-1][0] if numbered else 1


@click.command()
@click.argument("reply_queue")
@click.option("--follow", is_flag=True, help="Keep waiting for new results")
@FLEET_URL_OPTION
def results(reply_queue: str, follow: bool, redis_url: str | None) -> None:
    """Print (and take off) the results on a result queue, one JSON line each. A result is taken off only once it
    is written (into a pipe: once the reading process has read it), so a closed pipe (`| head -1`: exit 0),
    SIGINT or SIGTERM (exit 130 or 143) at any instant leaves every result not yet read on the queue, in order.
    An item that is not a labelq result stops the command (exit 1) and stays at the head of the queue; a name
    that is no result queue, or a key of another type, is exit 2."""
    from producer import UnreadableResult
    from worker.errors import InputError

    with producer(redis_url) as client, _signals_stop() as stop:
        taken = client.results(reply_queue, follow=follow)
        try:
            for result in taken:
                click.echo(result.model_dump_json())
                if not _read_by_the_other_end(sys.stdout):
                    raise BrokenPipeError
        except UnreadableResult as exc:  # it was put back at the head
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except ValueError as exc:  # not a name a result queue may have, or a key of another type
            raise InputError(f"{exc}; name the result queue your requests give as reply_to") from None
        except BrokenPipeError:  # the reader is gone (`| head`): a quiet end, as `yes | head` is
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            sys.exit(0)
        except Stopped as exc:
            sys.exit(128 + exc.signum)
        finally:
            stop.quiet()  # putting back is not interrupted
            taken.close()  # what it holds (a result not yet read) back at the head of the queue, in order


@click.command("get")
@click.argument("request_id")
@FLEET_URL_OPTION
def get(request_id: str, redis_url: str | None) -> None:
    """Print the result of request REQUEST_ID (by id, kept for LABELQ_RESULT_TTL_S); over several Redis servers,
    looked up on its home server first. Exit 1 when there is none (yet), or when it is an error result."""
    with producer(redis_url) as client:
        result = client.get(request_id)
    _print_found(request_id, result, "no result (yet) for it: not answered yet, expired, or never sent")


@click.command("wait")
@click.argument("request_id")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait")
@FLEET_URL_OPTION
def wait(request_id: str, timeout_s: float, redis_url: str | None) -> None:
    """Wait for the result of request REQUEST_ID and print it. Exit 1 when none came within --timeout, or when it is
    an error result."""
    with producer(redis_url) as client:
        result = client.wait(request_id, timeout_s)
    _print_found(request_id, result, f"no result within {timeout_s:g} s (is a labelq worker running? `labelq health`)")


def _print_found(request_id: str, result: ClassificationResult | ErrorResult | None, none_found: str) -> None:
    if result is None:
        click.echo(f"error: {request_id}: {none_found}", err=True)
        sys.exit(1)
    click.echo(result.model_dump_json(indent=2))
    sys.exit(1 if isinstance(result, ErrorResult) else 0)


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: the command ends, putting back what it holds (not an error: a BaseException)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalStop:
    """SIGINT and SIGTERM raise `Stopped` once; after the first, or `quiet()`, both are ignored so that putting
    back what is held cannot itself be interrupted."""

    STOPPING = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.previous = {signum: signal.getsignal(signum) for signum in self.STOPPING}
        for signum in self.STOPPING:
            signal.signal(signum, self._raise)

    def _raise(self, signum: int, _frame: object) -> None:
        self.quiet()
        raise Stopped(signum)

    def quiet(self) -> None:
        for signum in self.STOPPING:
            signal.signal(signum, signal.SIG_IGN)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _signals_stop() -> Iterator[_SignalStop]:
    stop = _SignalStop()
    try:
        yield stop
    finally:
        stop.restore()


def _read_by_the_other_end(stream: TextIO, poll_s: float = 0.0005) -> bool:
    """Once `stream` is flushed: for a pipe, wait until the process at its other end has read everything written
    (True) or closed it with bytes unread (False); anything else (a terminal, a file) took it when flushed."""
    import array
    import select
    import stat
    import time

    try:
        import fcntl
        import termios

        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return True
    except (ImportError, OSError, ValueError):  # no FIONREAD here, or no file descriptor (a test runner's stream)
        return True
    closed = select.poll()
    closed.register(fd, select.POLLERR)
    unread = array.array("i", [0])
    while True:
        try:
            fcntl.ioctl(fd, termios.FIONREAD, unread)
        except OSError:  # a system that cannot tell
            return True
        if unread[0] == 0:
            return True
        if closed.poll(0):
            return False
        time.sleep(poll_s)
        poll_s = min(poll_s * 2, 0.05)
