"""Forward-mode drivers: which one runs a network, by its forward mode.

Drivers live in modules of this package that define ``DRIVER``; they are imported only when
a network asks for one, so planning an isolated network never imports the direct or hostdev
drivers.
"""

from __future__ import annotations

import importlib

from virtnet.drivers.base import Driver
from virtnet.errors import HostError
from virtnet.model import Network

# Order matters: the first driver that handles a network wins (a forward mode 'bridge'
# network with a bridge name is a host bridge; without one it is macvtap).
DRIVER_MODULES = (
    "virtnet.drivers.bridged",
    "virtnet.drivers.hostbridge",
    "virtnet.drivers.direct",
    "virtnet.drivers.hostdev",
)


def _load(module_name: str) -> Driver | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None  # that driver is not part of this build
        raise
    driver = getattr(module, "DRIVER", None)
    return driver if isinstance(driver, Driver) else None


def driver_for(net: Network) -> Driver:
    """The driver that runs NET; HostError if no driver handles its forward mode."""
    for module_name in DRIVER_MODULES:
        driver = _load(module_name)
        if driver is not None and driver.handles(net):
            return driver
    raise HostError(
        f"network {net.name}: forward mode '{net.forward_mode.value}' is not supported"
    )


__all__ = ["Driver", "driver_for"]
