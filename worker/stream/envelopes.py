"""Reading kombu's Redis envelope: the JSON every Celery client LPUSHes, around the task message.

`body` (base64 when `properties.body_encoding` says so, compressed when the `compression` header names a
compression kombu sends), `content-type`, `headers`. Headers and content type are kept whenever they are
readable, so a message whose body cannot be read is still answered under its task id (an `invalid_message`
error) rather than left for a Celery `.get()` to wait on forever.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import json
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.constants import MESSAGE_MAX_BYTES

OVERSIZE_MARK = "labelq-oversize"  # set by the claim (worker/stream/redis_queue.py) on a message too large
OVERSIZE_LIMIT = "labelq-limit"


@dataclass(frozen=True, slots=True)
class Envelope:
    body: bytes  # the task message, decoded and decompressed; the whole envelope when it cannot be read
    headers: dict[str, Any]
    content_type: str | None
    problem: str | None = None  # why the body could not be read: the message is refused under its task id


class _Unreadable(ValueError):
    pass


def _bounded(decompressor: Any, data: bytes, limit: int) -> bytes:
    """zlib's, bz2's and lzma's streaming decompressors share `decompress(data, max_length)`."""
    out: bytes = decompressor.decompress(data, limit + 1)
    if len(out) > limit:
        raise _Unreadable(f"the body decompresses to larger than {limit} bytes; send a smaller message")
    if not decompressor.eof:
        raise _Unreadable("the compressed body is truncated")
    return out


def _zstd(data: bytes, limit: int) -> bytes:
    try:
        import zstandard  # type: ignore[import-not-found]  # optional, as it is for kombu
    except ImportError:
        raise _Unreadable("compression 'zstd' needs the zstandard module, which this worker lacks") from None
    with zstandard.ZstdDecompressor().stream_reader(data) as reader:
        out: bytes = reader.read(limit + 1)
    if len(out) > limit:
        raise _Unreadable(f"the body decompresses to larger than {limit} bytes; send a smaller message")
    return out


# kombu's compressions (kombu/compression.py), by content type and alias; brotli is not read (its decompressor
# cannot bound its output), nor anything else: such a message is refused naming it
_DECOMPRESS: dict[str, Callable[[bytes, int], bytes]] = {
    **dict.fromkeys(
        ("application/x-gzip", "gzip", "zlib"), lambda d, n: _bounded(zlib.decompressobj(zlib.MAX_WBITS | 32), d, n)
    ),
    **dict.fromkeys(("application/x-bz2", "bzip2", "bzip"), lambda d, n: _bounded(bz2.BZ2Decompressor(), d, n)),
    **dict.fromkeys(("application/x-lzma", "lzma", "xz"), lambda d, n: _bounded(lzma.LZMADecompressor(), d, n)),
    **dict.fromkeys(("application/zstd", "zstd", "zstandard"), _zstd),
}


def _body(envelope: dict[str, Any], headers: dict[str, Any], limit: int) -> bytes:
    properties = envelope.get("properties", {})
    if not isinstance(properties, dict):
        raise _Unreadable("envelope properties must be an object")
    body = envelope.get("body", "")
    if properties.get("body_encoding") == "base64":
        if not isinstance(body, str):
            raise _Unreadable("a base64 body must be a string")
        try:
            data = base64.b64decode(body.encode("ascii"))  # as leniently as kombu
        except (UnicodeEncodeError, binascii.Error):
            raise _Unreadable("the body is not base64, as body_encoding says") from None
    elif isinstance(body, str):
        data = body.encode("utf-8", errors="surrogatepass")
    elif isinstance(body, list | dict):
        data = json.dumps(body).encode("utf-8", errors="surrogatepass")
    else:
        raise _Unreadable(f"the envelope's body is {type(body).__name__}; it must be a string")
    compression = headers.get("compression")
    if compression is None:
        return data
    decompress = _DECOMPRESS.get(compression) if isinstance(compression, str) else None
    if decompress is None:
        supported = "application/x-gzip, application/x-bz2, application/x-lzma, application/zstd"
        raise _Unreadable(f"compression {str(compression)[:100]!r} is not supported; use one of {supported}")
    try:
        return decompress(data, limit)
    except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
        raise _Unreadable(f"the body is not {compression} data: {exc}") from None


def unwrap(raw: bytes, max_body_bytes: int = MESSAGE_MAX_BYTES) -> Envelope:
    """The task message inside a kombu envelope; an envelope that is not a JSON object comes back whole as the
    body. Bytes that are not UTF-8 in a part labelq does not read (a delivery tag, a property) do not spoil the
    rest, and a body that cannot be read keeps the headers readable (`problem` says why)."""
    try:
        envelope = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except (ValueError, RecursionError):
        return Envelope(raw, {}, None)
    if not isinstance(envelope, dict):
        return Envelope(raw, {}, None)
    headers = envelope.get("headers")
    headers = headers if isinstance(headers, dict) else {}
    content_type = envelope.get("content-type")
    content_type = content_type if isinstance(content_type, str) else None
    oversize = envelope.get(OVERSIZE_MARK)
    if oversize is not None:  # the claim kept only this stub of a message too large to serve
        limit = envelope.get(OVERSIZE_LIMIT)
        problem = (
            f"the message is {oversize} bytes; labelq serves messages of at most {limit} bytes "
            "(LABELQ_MAX_MESSAGE_BYTES): send a shorter text, fewer labels or examples, or name a stored label set"
        )
        return Envelope(raw, headers, content_type, problem)
    try:
        return Envelope(_body(envelope, headers, max_body_bytes), headers, content_type)
    except _Unreadable as exc:
        return Envelope(raw, headers, content_type, str(exc))  # the whole envelope, for its dead letter
