"""Which network addresses a server-side request may go to (webhooks: no server-side request
forgery into the operator's network).

Pure standard library, on the ground floor because two rooms need it: the API checks a
webhook's URL when it is registered (api/services/webhook_urls.py) and the sender checks it
again, resolving the host anew, right before each delivery (worker/webhook_sender.py), so a
name that resolved to a public address at registration and to 127.0.0.1 later (DNS
rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = ("http", "https")


class UnsafeURL(ValueError):
    """A URL a server-side request must not go to; the message says why."""


def refusal(ip: IPAddress) -> str | None:
    """Why a request must not go to `ip` (loopback, link-local, private, ...), None if it is
    a global unicast address. An IPv4 address mapped into IPv6 (::ffff:a.b.c.d) or embedded in
    6to4/Teredo is judged as the IPv4 address it carries."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            why = refusal(embedded)
            return f"{why} (embedded in {ip})" if why else None
    for flag, words in (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
                        ("is_link_local", "link-local"), ("is_multicast", "multicast"),
                        ("is_private", "private"), ("is_reserved", "reserved")):
        if getattr(ip, flag):
            return f"{ip} is a {words} address"
    if not ip.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT), documentation ranges
        return f"{ip} is not a global address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL: its scheme, host (as written), port, and where it resolved."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; UnsafeURL for anything else (other schemes,
    no host, credentials in the URL, a bad port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURL(f"the scheme must be http or https, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise UnsafeURL("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("credentials in the URL are not accepted (use the signature)")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address `host` resolves to now (a literal address: itself); UnsafeURL when it
    does not resolve."""
    try:
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURL(f"host {host!r} does not resolve: {exc}") from exc
    found = dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos)
    if not found:
        raise UnsafeURL(f"host {host!r} does not resolve")
    return tuple(found)


def check_url(url: str, allow_private: bool = False) -> Target:
    """Parse `url` and resolve its host; UnsafeURL unless it is http(s) and every address the
    host resolves to is global (with `allow_private`, any address will do). Every address,
    not just the first: the connection may go to any of them."""
    scheme, host, port = parse_url(url)
    addresses = resolve(host, port)
    if not allow_private:
        for ip in addresses:
            why = refusal(ip)
            if why is not None:
                shown = "" if str(ip) == host else f" (host {host!r})"
                raise UnsafeURL(f"{why}{shown}; requests to loopback, link-local, private, "
                                "reserved or multicast addresses are refused unless "
                                "TRAINYARD_WEBHOOKS_ALLOW_PRIVATE=1")
    return Target(url=url, scheme=scheme, host=host, port=port, addresses=addresses)
