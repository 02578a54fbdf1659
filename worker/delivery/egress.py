"""Where a webhook may be sent. A webhook URL is user input: check it before connecting, and connect only to
the address that was checked.

- Only http and https, a host, no credentials in the URL.
- With an allowlist (`LABELQ_WEBHOOK_ALLOWED_HOSTS`, exact names or `*.domain`), the host must match it.
- The host is resolved here; every address it resolves to must be public: loopback, private (RFC 1918, ULA),
  link-local (which holds the 169.254.169.254 metadata service), multicast, reserved and unspecified addresses
  are refused unless the host is listed in `LABELQ_WEBHOOK_PRIVATE_HOSTS`.
- The connection then goes to that checked address (the name is kept for Host and TLS SNI), so a DNS answer
  that changes between check and connect (rebinding) cannot reach an internal service; redirects are not
  followed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from worker.settings import Settings

Resolver = Callable[[str, int], list[str]]


class EgressRefused(ValueError):
    """The URL may not be delivered to; `reason` is a stable word for dead letters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # as written in the URL: for Host and SNI
    address: str  # the checked IP to connect to
    port: int
    path: str  # path and query

    @property
    def connect_url(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{address}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _matches(host: str, patterns: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def _literal(host: str) -> str | None:
    """The address a host names without DNS: an IP literal, or loopback for localhost; None for other names."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "127.0.0.1" if host.lower().rstrip(".") in ("localhost", "localhost.localdomain") else None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allowed_hosts: tuple[str, ...] = ()  # empty: any public host
    private_hosts: tuple[str, ...] = ()  # hosts that may resolve to private or loopback addresses
    resolver: Resolver = system_resolver

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        return cls(allowed_hosts=settings.webhook_allowed_hosts, private_hosts=settings.webhook_private_hosts)

    def check_static(self, url: str) -> None:
        """Everything but DNS: the cheap check the classification worker makes before spending inference.
        Names are resolved (and checked again) only when the delivery is attempted."""
        self.check(url, resolve=False)

    def check(self, url: str, *, resolve: bool = True) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EgressRefused("webhook_url_invalid", "a webhook URL must be http(s) with a host")
        if parts.username or parts.password:
            raise EgressRefused("webhook_url_invalid", "credentials in a webhook URL are not accepted")
        host = parts.hostname
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise EgressRefused("webhook_url_invalid", "the webhook URL has an invalid port") from None
        if self.allowed_hosts and not _matches(host, self.allowed_hosts):
            raise EgressRefused("webhook_host_not_allowed", f"{host} is not in the webhook allowlist")
        literal = _literal(host)
        if not resolve and literal is None:
            return Target(parts.scheme, host, "", port, parts.path or "/")  # a name: checked at delivery
        try:
            addresses = [literal] if literal else self.resolver(host, port)
        except OSError as exc:
            raise EgressRefused("webhook_dns_failed", f"{host} does not resolve: {exc}") from None
        if not addresses:
            raise EgressRefused("webhook_dns_failed", f"{host} resolves to nothing")
        if not _matches(host, self.private_hosts):
            blocked = [a for a in addresses if not _public(a)]
            if blocked:
                raise EgressRefused(
                    "webhook_private_address", f"{host} resolves to a non-public address ({blocked[0]}); refused"
                )
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(parts.scheme, host, addresses[0], port, path)
