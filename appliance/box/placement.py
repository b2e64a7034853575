"""Place a plan in a host namespace: the same box inside the lab, or on hardware.

A plan names the box's own stack as namespace `None` and its service
namespaces by role (`gw`, `vproxy`). On real hardware that is the machine's
root namespace and namespaces called `gw` and `vproxy`. In the lab the box's
hardware is itself a namespace (`lab-box`), so its stack lives there and its
service namespaces are called `lab-box-gw` and `lab-box-vproxy`, which lets
several boxes and test runs share one machine. `place` rewrites every
namespace a plan mentions; it is pure.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from appliance.kernel.desired import Namespace

NS_FIELDS = ("ns", "peer_ns", "netns")


@dataclasses.dataclass(frozen=True)
class Placement:
    host_ns: str | None = None  # None: the namespace the appliance runs in
    prefix: str = ""  # prepended to service namespaces ("lab-box-" -> "lab-box-gw")

    @classmethod
    def inside(cls, host_ns: str) -> "Placement":
        return cls(host_ns=host_ns, prefix=f"{host_ns}-")

    def ns(self, name: str | None) -> str | None:
        return self.host_ns if name is None else f"{self.prefix}{name}"


def place(obj: Any, where: Placement) -> Any:
    """Return `obj` with every namespace field (recursively) placed."""
    if where == Placement():
        return obj
    if isinstance(obj, tuple):
        return tuple(place(o, where) for o in obj)
    if isinstance(obj, list):
        return [place(o, where) for o in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name in NS_FIELDS:
                changes[f.name] = where.ns(value)
            elif isinstance(value, (tuple, list)) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
                changes[f.name] = place(value, where)
        if isinstance(obj, Namespace):
            changes["name"] = where.ns(obj.name)
        return dataclasses.replace(obj, **changes) if changes else obj
    return obj
