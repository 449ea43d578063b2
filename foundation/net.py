"""Network address rules shared by every server and endpoint of the system."""
from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is reachable only from this machine: ``localhost``
    or a loopback address (127.0.0.0/8, ::1). Other names count as reachable from elsewhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
