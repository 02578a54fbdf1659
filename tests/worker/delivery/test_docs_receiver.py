"""The receiver in docs/webhooks.md, run as written: a real HTTP server in its own process, fed real signed
deliveries by a real classification worker and webhook worker (fake model). It accepts the genuine deliveries,
and refuses a tampered body, a stale timestamp and a delivery signed with another secret."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from labelq.local_redis import free_port
from producer import Client
from schemas import ClassifyRequest
from schemas.webhooks import headers_for
from tests.conftest import WorkerFactory

ROOT = Path(__file__).resolve().parents[3]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_b3RoZXIga2V5LCBub3QgdGhlIHJlY2VpdmVyJ3M="  # a valid secret the receiver does not know
DEADLINE_S = 60.0


def receiver_code() -> str:
    page = (ROOT / "docs" / "webhooks.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "do_POST" in b]
    assert len(blocks) == 1, "docs/webhooks.md should show one receiver"
    return str(blocks[0])


@dataclass
class RunningReceiver:
    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def accepted(self) -> dict[str, str]:
        """webhook-id -> body, of each delivery the receiver accepted (it prints them)."""
        return dict(line.split(" ", 1) for line in list(self.lines) if " " in line)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[RunningReceiver]:
    script = tmp_path / "receiver.py"
    script.write_text(receiver_code())
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env={"WEBHOOK_SECRET": SECRET, "PORT": str(port), "PATH": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    running = RunningReceiver(f"http://127.0.0.1:{port}", process)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "the docs' receiver did not start"
            time.sleep(0.05)
    yield running
    process.kill()
    process.wait()
    reader.join(timeout=10)
    assert process.stdout is not None
    process.stdout.close()


def wait_until(condition: object, timeout_s: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_docs_receiver_accepts_real_deliveries_and_refuses_forgeries(
    start_worker: WorkerFactory, client: Client, receiver: RunningReceiver
) -> None:
    settings = {
        "enable_fake_model": True,
        "model": "fake",
        "webhook_secrets": {"default": SECRET, "other": OTHER_SECRET},
        "webhook_private_hosts": ["127.0.0.1"],  # the receiver is on loopback: explicitly allowed
        "webhook_retry_delays_s": [0.2],
    }
    start_worker(**settings)
    start_worker(role="webhooks", **settings)

    genuine = [
        client.submit(
            ClassifyRequest(
                text=f"I was charged twice, order {i}", labels=["billing", "bug"], reply_to=f"{receiver.url}/hook"
            )
        )
        for i in range(3)
    ]
    forged = client.submit(
        ClassifyRequest(
            text="signed with a key the receiver does not have",
            labels=["billing", "bug"],
            reply_to=f"{receiver.url}/hook",
            webhook_secret="other",
        )
    )
    assert wait_until(lambda: set(genuine) <= set(receiver.accepted())), receiver.lines
    for request_id in genuine:
        assert f'"id":"{request_id}"' in receiver.accepted()[request_id].replace(" ", "")
    # the delivery signed with another secret got a 4xx: a dead letter, never accepted
    assert wait_until(lambda: any(b'"webhook_rejected"' in x for x in client.redis.lrange("labelq:dead", 0, -1)))
    assert forged not in receiver.accepted()

    body = b'{"id": "hand-made", "status": "ok", "top": "billing"}'
    with httpx.Client(timeout=10) as http:
        genuine_post = http.post(f"{receiver.url}/hook", content=body, headers=headers_for(SECRET, "hand-made", body))
        tampered = http.post(
            f"{receiver.url}/hook",
            content=body.replace(b"billing", b"refund!"),
            headers=headers_for(SECRET, "hand-made", body),
        )
        stale_stamp = int(time.time()) - 600
        stale = http.post(
            f"{receiver.url}/hook", content=body, headers=headers_for(SECRET, "hand-made", body, timestamp=stale_stamp)
        )
        unsigned = http.post(f"{receiver.url}/hook", content=body)
    assert genuine_post.status_code // 100 == 2
    assert (tampered.status_code, stale.status_code, unsigned.status_code) == (401, 401, 401)
    assert list(receiver.accepted()).count("hand-made") == 1
