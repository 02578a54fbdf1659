"""Standard Webhooks signing and verification, pinned to the specification's published test vector."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from schemas.webhooks import WebhookVerificationError, headers_for, sign, verify

# The Standard Webhooks reference vector (also used by the svix libraries' tests).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MESSAGE_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
HEADERS = {"webhook-id": MESSAGE_ID, "webhook-timestamp": str(TIMESTAMP), "webhook-signature": SIGNATURE}


def test_sign_reproduces_the_published_vector() -> None:
    assert sign(SECRET, MESSAGE_ID, TIMESTAMP, BODY) == SIGNATURE
    assert sign(SECRET.removeprefix("whsec_"), MESSAGE_ID, TIMESTAMP, BODY) == SIGNATURE  # prefix optional


def test_verify_accepts_the_published_vector() -> None:
    verify(SECRET, HEADERS, BODY, now=TIMESTAMP)
    verify(SECRET, {k.upper(): v for k, v in HEADERS.items()}, BODY, now=TIMESTAMP + 299)
    several = {**HEADERS, "webhook-signature": "v1,bm9wZQ== v2,whatever " + SIGNATURE}
    verify(SECRET, several, BODY, now=TIMESTAMP)  # any one matching v1 signature suffices


@pytest.mark.parametrize(
    ("headers", "body", "now", "why"),
    [
        (HEADERS, b'{"test": 2432232315}', TIMESTAMP, "no matching"),
        ({**HEADERS, "webhook-id": "msg_other"}, BODY, TIMESTAMP, "no matching"),
        (HEADERS, BODY, TIMESTAMP + 301, "tolerance"),
        (HEADERS, BODY, TIMESTAMP - 301, "tolerance"),
        ({**HEADERS, "webhook-signature": "v2," + SIGNATURE[3:]}, BODY, TIMESTAMP, "no matching"),
        ({k: v for k, v in HEADERS.items() if k != "webhook-timestamp"}, BODY, TIMESTAMP, "missing"),
        ({**HEADERS, "webhook-timestamp": "soon"}, BODY, TIMESTAMP, "malformed"),
    ],
)
def test_verify_refuses(headers: dict[str, str], body: bytes, now: int, why: str) -> None:
    with pytest.raises(WebhookVerificationError, match=why):
        verify(SECRET, headers, body, now=now)


def test_a_receiver_written_from_the_spec_alone_verifies_what_labelq_sends() -> None:
    """Independent of labelq's code: HMAC-SHA256 over "id.timestamp.body" with the base64-decoded key."""
    body = b'{"status": "ok", "id": "r1"}'
    sent = headers_for(SECRET, "r1", body)
    key = base64.b64decode(SECRET.split("_", 1)[1])
    content = f"{sent['webhook-id']}.{sent['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert sent["webhook-signature"] == f"v1,{expected}"


def test_a_malformed_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        sign("whsec_not base64!", "id", 1, b"{}")
