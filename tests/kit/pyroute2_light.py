"""pyroute2 for the tests and benchmarks that still want it in their own process (the netns
fixtures preload it so forked children start warm; the benchmarks time it): virtnet itself never
imports pyroute2 (see virtnet.host.rtnl for why), so it is a dependency of the test extra only.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from virtnet.errors import HostError


def load_pyroute2() -> tuple[type, type[Exception]]:
    """Import IPRoute and NetlinkError without running pyroute2's package ``__init__``.

    If nothing imported pyroute2 yet, a bare package module stands in for it while the
    submodules load. The stand-in completes itself (runs the real ``__init__``) the first
    time anyone asks it for a name that is not a submodule, so a later
    ``from pyroute2 import NDB`` elsewhere in the process still works.
    """
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or spec.loader is None:
            raise HostError("the pyroute2 package is not installed")
        package = importlib.util.module_from_spec(spec)
        loader = spec.loader

        def complete(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            if importlib.util.find_spec(f"pyroute2.{name}") is not None:
                return importlib.import_module(f"pyroute2.{name}")
            # Not a submodule: run the real package init into this very module once.
            package.__dict__.pop("__getattr__", None)
            loader.exec_module(package)  # type: ignore[union-attr]
            return getattr(package, name)

        package.__getattr__ = complete  # type: ignore[method-assign]
        sys.modules["pyroute2"] = package
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    return IPRoute, NetlinkError
