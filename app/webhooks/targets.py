"""Where a webhook may point: http(s) URLs whose host resolves only to public addresses.

Checked when a webhook is registered (a refusal is a 422) and again at every send, against
what the name resolves to then: a name that later resolves to a private address (DNS
rebinding) is refused at send time, and the connection goes to the very address that was
checked. A loopback, private, link-local, shared or reserved target is allowed only when the
operator sets TRAINSERVE_WEBHOOK_ALLOW_PRIVATE=1. Redirects are never followed (a 3xx is
recorded as the attempt's answer), so a public receiver cannot bounce a delivery inward.
"""

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

Resolver = Callable[..., list[tuple[Any, ...]]]
SCHEMES = {"http": 80, "https": 443}


class TargetRefused(ValueError):
    """The URL may not be a webhook's target; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written in the URL (the TLS name and the Host header)
    port: int
    path: str  # with its query
    address: str  # the checked address to connect to

    @property
    def connect_url(self) -> str:
        """The URL with the checked address in place of the name."""
        ip = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{ip}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == SCHEMES[self.scheme] else f"{name}:{self.port}"


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> tuple[str, str, int, str]:
    """The URL's (scheme, host, port, path with query); TargetRefused if it is no http(s)
    URL with a host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise TargetRefused("only http and https URLs are allowed")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL are not allowed; use the secret")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or SCHEMES[parts.scheme], path


def resolve(url: str, *, allow_private: bool,
            resolver: Resolver = socket.getaddrinfo) -> Target:
    """The URL's target, checked; TargetRefused if it may not be one. Every address the
    name resolves to must be public (unless `allow_private`), not only the first."""
    scheme, host, port, path = check_url(url)
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise TargetRefused(f"the host {host!r} does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise TargetRefused(f"the host {host!r} does not resolve")
    private = [a for a in addresses if not is_public(a)]
    if private and not allow_private:
        raise TargetRefused(
            f"the host {host!r} resolves to a loopback, private or otherwise non-public "
            f"address ({private[0]}); the operator may allow such targets with "
            "TRAINSERVE_WEBHOOK_ALLOW_PRIVATE=1")
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])
