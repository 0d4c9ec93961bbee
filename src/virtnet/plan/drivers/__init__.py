"""Forward-mode drivers: which one runs a network, by its family.

The family is decided once, by :func:`virtnet.spec.model.family_of` (the definition rules of
:mod:`virtnet.spec.validate` read the same function, since the definition layer never imports a
driver); this registry maps each family to the module of its driver. Driver modules define
``DRIVER`` and are imported only when a network of their family asks, so planning an
isolated network never imports the direct or hostdev drivers.
"""

from __future__ import annotations

import importlib

from virtnet.plan.drivers.base import Capabilities, Driver, NetworkTopology
from virtnet.errors import HostError
from virtnet.spec.model import Network, NetworkFamily, family_of

# One module per family; a new backend is a family here and one driver module.
DRIVER_MODULES: dict[NetworkFamily, str] = {
    NetworkFamily.OWN_BRIDGE: "virtnet.plan.drivers.bridged",
    NetworkFamily.HOST_BRIDGE: "virtnet.plan.drivers.hostbridge",
    NetworkFamily.DIRECT: "virtnet.plan.drivers.direct",
    NetworkFamily.HOSTDEV: "virtnet.plan.drivers.hostdev",
}


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
    module_name = DRIVER_MODULES.get(family_of(net))
    driver = _load(module_name) if module_name is not None else None
    if driver is not None and driver.handles(net):
        return driver
    raise HostError(
        f"network {net.name}: forward mode '{net.forward_mode.value}' is not supported"
    )


__all__ = ["DRIVER_MODULES", "Capabilities", "Driver", "NetworkTopology", "driver_for"]
