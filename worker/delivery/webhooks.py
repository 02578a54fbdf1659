"""One webhook delivery attempt and the retry policy around it (no Celery: the task that runs it is thin).

An attempt POSTs the result JSON, signed per Standard Webhooks, to the checked address of the URL
(worker/delivery/egress.py), with no redirects, bounded as a whole: connect, request, response headers and body
together end within LABELQ_WEBHOOK_TIMEOUT_S (a receiver that trickles a byte a second cannot hold a delivery
thread past it), and at most RESPONSE_MAX_BYTES of the response body is read (only the status matters; an
endless body costs nothing). Its outcome decides what happens next:

    2xx                                  delivered
    network error, timeout, 429, 5xx     retry after the next backoff delay (or Retry-After, if longer)
    410 Gone                             give up: the receiver asked to stop
    3xx, other 4xx, refused egress       give up: retrying cannot help
    a secret that cannot sign            give up (webhook_secret_invalid): no attempt is made
    retries exhausted                    give up

Giving up writes a dead letter with every attempt's outcome. The classification is never re-run.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx

from schemas.webhooks import headers_for
from worker.delivery.egress import EgressPolicy, EgressRefused
from worker.settings import Settings

Outcome = Literal["delivered", "retry", "give_up", "deferred"]  # deferred: not attempted (its receiver is busy)
SECRET_INVALID = "webhook_secret_invalid"  # the dead-letter reason of a delivery its secret cannot sign
RESPONSE_MAX_BYTES = 65_536  # of a receiver's response body, read only so a short one leaves the connection reusable


class WebhookHttp:
    """HTTP for webhook attempts: one event loop and one pooled `httpx.AsyncClient` per delivery thread, so an
    attempt is bounded in total by a cancellation (asyncio's timeout) that no receiver's pace can outrun, which a
    blocking client's per-read timeouts are not. `transport`: httpx's (an `httpx.MockTransport` in tests)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._local = threading.local()
        self._opened: list[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = []
        self._lock = threading.Lock()

    def post(
        self, url: str, *, content: bytes, headers: dict[str, str], extensions: dict[str, Any], timeout_s: float
    ) -> httpx.Response:
        """The response, its body read up to RESPONSE_MAX_BYTES; `TimeoutError` once `timeout_s` has passed."""
        loop, client = self._mine()
        return loop.run_until_complete(
            asyncio.wait_for(_post(client, url, content, headers, extensions, timeout_s), timeout_s)
        )

    def _mine(self) -> tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]:
        opened: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = getattr(self._local, "opened", None)
        if opened is None:
            opened = (asyncio.new_event_loop(), httpx.AsyncClient(transport=self._transport, follow_redirects=False))
            self._local.opened = opened
            with self._lock:
                self._opened.append(opened)
        return opened

    def close(self) -> None:
        with self._lock:
            for loop, client in self._opened:
                if not loop.is_running():
                    loop.run_until_complete(client.aclose())
                    loop.close()
            self._opened.clear()


async def _post(
    client: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: dict[str, str],
    extensions: dict[str, Any],
    timeout_s: float,
) -> httpx.Response:
    request = client.build_request(
        "POST", url, content=content, headers=headers, extensions=extensions, timeout=timeout_s
    )
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        read = 0
        if not response.is_stream_consumed:  # a response built whole (httpx.MockTransport) has no stream left
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= RESPONSE_MAX_BYTES:
                    break
    finally:
        await response.aclose()
    return response


@dataclass(frozen=True, slots=True)
class Attempt:
    at_s: float
    outcome: Outcome
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; `delays_s[i]` is the wait before retry i+1."""

    delays_s: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0)
    jitter: float = 0.2  # each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]
    max_retry_after_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(delays_s=settings.webhook_retry_delays_s)

    def next_delay_s(self, attempts: Sequence[Attempt], rng: random.Random | None = None) -> float | None:
        """Seconds until the next try, or None when the last attempt was final or retries are used up."""
        if not attempts or attempts[-1].outcome != "retry" or len(attempts) > len(self.delays_s):
            return None
        rng = rng or random.Random()
        delay = self.delays_s[len(attempts) - 1] * rng.uniform(1 - self.jitter, 1 + self.jitter)
        asked = attempts[-1].retry_after_s
        if asked is not None:
            delay = max(delay, min(asked, self.max_retry_after_s))
        return delay


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Retry-After as delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)


def attempt_delivery(
    http: WebhookHttp,
    policy: EgressPolicy,
    *,
    url: str,
    body: bytes,
    message_id: str,
    secret: str,
    timeout_s: float,
) -> Attempt:
    now = time.time()
    try:
        signed = headers_for(secret, message_id, body)
    except ValueError:  # the settings refuse such a secret at start; one that reaches here fails every attempt alike
        return Attempt(now, "give_up", error=f"{SECRET_INVALID}: the webhook secret is not 'whsec_' followed by base64")
    try:
        target = policy.check(url)
    except EgressRefused as exc:  # a name that does not resolve may resolve later; the rest is final
        return Attempt(now, "retry" if exc.reason == "webhook_dns_failed" else "give_up", error=f"{exc.reason}: {exc}")
    headers = {**signed, "host": target.host_header, "user-agent": "labelq-webhook/1"}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        response = http.post(
            target.connect_url, content=body, headers=headers, extensions=extensions, timeout_s=timeout_s
        )
    except TimeoutError:
        return Attempt(now, "retry", error=f"timeout: no complete response within {timeout_s} s")
    except httpx.TimeoutException as exc:
        return Attempt(now, "retry", error=f"timeout: {type(exc).__name__}")
    except httpx.TransportError as exc:
        return Attempt(now, "retry", error=f"network: {type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(now, "delivered", status=status)
    if status == 410:
        return Attempt(now, "give_up", status=status, error="gone: the receiver asked to stop")
    if status == 429 or status >= 500:
        return Attempt(
            now, "retry", status=status, retry_after_s=parse_retry_after(response.headers.get("retry-after"), now)
        )
    if 300 <= status < 400:
        return Attempt(now, "give_up", status=status, error="redirect refused (webhooks do not follow redirects)")
    return Attempt(now, "give_up", status=status, error="client error: retrying cannot help")
