"""The client's address for per-IP limits: X-Forwarded-For is believed only when it comes from a trusted proxy.

Walking the header from the right and skipping trusted proxies finds the first address no trusted proxy vouches
for; whatever lies left of it a client may have forged, so it is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in trusted_proxies)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def of(self, peer: str, headers: list[tuple[bytes, bytes]]) -> str:
        if not self.networks or not self._trusted(peer):
            return peer
        hops: list[str] = []
        for name, value in headers:
            if name == b"x-forwarded-for":  # several headers are one list, in order
                hops += value.decode("latin-1").split(",")
        for hop in reversed(hops):
            hop = hop.strip()
            if not hop:
                continue
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # garbage from the client side of a trusted proxy: fall back to the proxy
        return peer
