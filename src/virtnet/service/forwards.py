"""The port-forward verbs on a defined or running network: net-forward-add, -delete, -list."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from virtnet.errors import InvalidOperationError, ValidationError, VirtnetError
from virtnet.plan.forwards import check_forwards
from virtnet.service.privilege import require_net_admin, require_net_admin_if
from virtnet.spec.forwards import PortForward, parse_port_range, read_forwards, write_forwards
from virtnet.spec.model import Network
from virtnet.spec.validate import validate
import copy
from virtnet.service.live import apply_live

if TYPE_CHECKING:
    from virtnet.service.engine import Engine

# --- the verbs -----------------------------------------------------------------------------


def _targets(engine: Engine, name: str, live: bool, config: bool) -> tuple[Any, bool, bool]:
    record = engine.lookup(name)
    if not live and not config:  # virsh's "current"
        live, config = record.active, not record.active
    if live and not record.active:
        raise InvalidOperationError("Requested operation is not valid: network is not running")
    if config and record.config is None:
        raise InvalidOperationError(
            "Requested operation is not valid: cannot change persistent config of a "
            "transient network")
    return record, live, config


def _change(engine: Engine, operation: str, name: str, live: bool, config: bool,
            edit: Any) -> tuple[bool, bool]:
    """Apply EDIT (forwards → forwards) to the live and/or persistent definitions; both new
    definitions are checked before anything changes. A live change (``live``, or "current"
    of an active network) needs CAP_NET_ADMIN: without it OPERATION is refused before the
    lock is taken."""
    require_net_admin_if(f"{operation} --live",
                         lambda: live or (not config and engine.lookup(name).active))
    with engine.store.lock:
        record, live, config = _targets(engine, name, live, config)
        if live:
            require_net_admin(f"{operation} --live")  # started since the check above
        updated: dict[str, Network] = {}
        for which, enabled in (("live", live), ("config", config)):
            if not enabled:
                continue
            net = copy.deepcopy(record.live if which == "live" else record.config)
            forwards = edit(read_forwards(net))
            write_forwards(net, forwards)
            problems = validate(net) + check_forwards(net, forwards)
            if problems:
                raise ValidationError(problems, source=f"network '{record.name}' ({which})")
            updated[which] = net
        if "live" in updated:
            apply_live(engine, record, updated["live"])
        if "config" in updated:
            engine.store.write_definition(record.name, engine.format(updated["config"]))
    return live, config


def add_forward(engine: Engine, name: str, fwd: PortForward,
                live: bool = False, config: bool = False) -> tuple[bool, bool]:
    """net-forward-add; returns (live changed, config changed)."""
    return _change(engine, "net-forward-add", name, live, config, lambda old: [*old, fwd])


def delete_forward(engine: Engine, name: str, proto: str, port: str,
                   address: str | None = None, live: bool = False,
                   config: bool = False) -> tuple[bool, bool]:
    """net-forward-del by protocol and port(s) (and host address when given)."""
    start, end = parse_port_range(port)
    host = str(ipaddress.ip_address(address)) if address else None

    def edit(old: list[PortForward]) -> list[PortForward]:
        kept = [f for f in old if f.key() != (proto, start, end, host)
                and not (host is None and f.key()[:3] == (proto, start, end))]
        if len(kept) == len(old):
            raise VirtnetError(f"no {proto} forward of port {port} on network '{name}'")
        return kept

    return _change(engine, "net-forward-del", name, live, config, edit)


def list_forwards(engine: Engine, name: str, inactive: bool = False) -> list[dict[str, Any]]:
    """The forwards of the live definition (the persistent one with ``inactive``)."""
    record = engine.lookup(name)
    net = record.config if inactive and record.config is not None else record.current
    return [fwd.to_dict() for fwd in read_forwards(net)]
