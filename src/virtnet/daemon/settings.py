"""virtnetd's defaults, in a module of their own so that its argument parser (``virtnetd
--help``, ``--version``) loads neither the server nor aiohttp.
"""

from __future__ import annotations

DEFAULT_GROUP = "virtnet"  # members may change networks and own the socket
DEFAULT_REQUEST_TIMEOUT_S = 10.0
SOCKET_MODE = 0o660
TICK_S = 0.2  # supervision period: dnsmasq restarted and leases seen well within 1 s

__all__ = ["DEFAULT_GROUP", "DEFAULT_REQUEST_TIMEOUT_S", "SOCKET_MODE", "TICK_S"]
