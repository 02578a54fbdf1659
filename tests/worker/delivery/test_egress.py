"""Webhook egress: only checked public addresses, unless explicitly allowed."""

from __future__ import annotations

import pytest

from worker.delivery.egress import EgressPolicy, EgressRefused

DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "sneaky.example.com": ["10.0.0.7"],  # a public name pointing inside
    "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    "mapped.example.com": ["::ffff:169.254.169.254"],
    "localhost": ["127.0.0.1", "::1"],
}


def fake_dns(host: str, port: int) -> list[str]:
    if host in DNS:
        return DNS[host]
    if host.replace(".", "").isdigit() or ":" in host:
        return [host]
    raise OSError("Name or service not known")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "webhook_private_address"),
        ("http://169.254.169.254/latest/meta-data/", "webhook_private_address"),
        ("http://10.1.2.3/h", "webhook_private_address"),
        ("http://192.168.1.1/h", "webhook_private_address"),
        ("http://172.16.0.1/h", "webhook_private_address"),
        ("http://[::1]/h", "webhook_private_address"),
        ("http://[fd00::1]/h", "webhook_private_address"),
        ("http://0.0.0.0/h", "webhook_private_address"),
        ("https://sneaky.example.com/h", "webhook_private_address"),
        ("https://mixed.example.com/h", "webhook_private_address"),
        ("https://mapped.example.com/h", "webhook_private_address"),
        ("http://localhost/h", "webhook_private_address"),
        ("https://nowhere.invalid/h", "webhook_dns_failed"),
        ("ftp://hooks.example.com/h", "webhook_url_invalid"),
        ("https://user:pw@hooks.example.com/h", "webhook_url_invalid"),
        ("https://hooks.example.com:99999/h", "webhook_url_invalid"),
    ],
)
def test_refused(url: str, reason: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        EgressPolicy(resolver=fake_dns).check(url)
    assert refused.value.reason == reason


def test_public_host_is_pinned_to_the_checked_address() -> None:
    target = EgressPolicy(resolver=fake_dns).check("https://hooks.example.com/in?x=1")
    assert target.connect_url == "https://93.184.216.34:443/in?x=1"
    assert (target.host_header, target.host) == ("hooks.example.com", "hooks.example.com")
    v6 = EgressPolicy(resolver=fake_dns).check("http://v6.example.com:8080/h")
    assert v6.connect_url == "http://[2606:2800:220:1:248:1893:25c8:1946]:8080/h"
    assert v6.host_header == "v6.example.com:8080"


def test_allowlist() -> None:
    policy = EgressPolicy(allowed_hosts=("*.example.com",), resolver=fake_dns)
    assert policy.check("https://hooks.example.com/h").address == "93.184.216.34"
    with pytest.raises(EgressRefused, match="allowlist"):
        policy.check("https://93.184.216.34/h")
    with pytest.raises(EgressRefused) as refused:
        policy.check("https://sneaky.example.com/h")  # on the allowlist, still not to a private address
    assert refused.value.reason == "webhook_private_address"


def test_private_hosts_are_allowed_only_when_listed() -> None:
    policy = EgressPolicy(private_hosts=("127.0.0.1", "localhost"), resolver=fake_dns)
    assert policy.check("http://127.0.0.1:9000/h").connect_url == "http://127.0.0.1:9000/h"
    assert policy.check("http://localhost/h").address == "127.0.0.1"
    with pytest.raises(EgressRefused):
        policy.check("http://169.254.169.254/")
