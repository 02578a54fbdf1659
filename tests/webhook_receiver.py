"""A webhook receiver written from the Standard Webhooks specification alone (no labelq code): it checks
`webhook-signature` = "v1," + base64(HMAC-SHA256(base64-decoded key, "<id>.<timestamp>.<body>")) and a
timestamp within five minutes, records each delivery, and answers as the test tells it to."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Delivery:
    webhook_id: str
    timestamp: int
    body: bytes
    verified: bool
    path: str


@dataclass
class Receiver:
    secret: str
    # (number of this request, starting at 1) -> (status, seconds to wait before answering)
    behaviour: Callable[[int], tuple[int, float]] = lambda n: (200, 0.0)
    deliveries: list[Delivery] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        key = base64.b64decode(self.secret.split("_", 1)[1])
        try:
            webhook_id, stamp = headers["webhook-id"], int(headers["webhook-timestamp"])
        except (KeyError, ValueError):
            return False
        if abs(time.time() - stamp) > 300:
            return False
        expected = base64.b64encode(hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
        return any(
            hmac.compare_digest(s.split(",", 1)[-1].encode(), expected)
            for s in headers.get("webhook-signature", "").split()
            if s.startswith("v1,")
        )

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.requests += 1
                    number = receiver.requests
                status, wait_s = receiver.behaviour(number)
                time.sleep(wait_s)
                if status == 200:
                    with receiver.lock:
                        receiver.deliveries.append(
                            Delivery(
                                headers.get("webhook-id", ""),
                                int(headers.get("webhook-timestamp", "0")),
                                body,
                                receiver.verify(headers, body),
                                self.path,
                            )
                        )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"
