"""Put a plan's switch into the compiled datapath (the apply layer's switch port on the machine).

A plan's switch is ports (name, OpenFlow number, link) and a flow table of
`Flow` objects; the datapath (`appliance.switch.datapath`) compiles it to
eBPF and swaps it in on every port. The loader skips the swap when neither
the flows nor the ports' devices changed since the last load, so an apply
that changes nothing touches nothing.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import appliance.switch.datapath as datapath_pkg

from appliance import durable
from appliance.box.layout import PIN_ROOT
from appliance.kernel import Kernel
from appliance.switch.bridge import Bridge
from appliance.switch.datapath.datapath import Datapath

# The port facing the home's devices: their traffic is counted per MAC there.
HOME_PORTS = ("downlink",)
# The box's DNS server: a paused device may still ask it.
DNS_PORTS = ("vproxy",)
RUNTIME_C = Path(datapath_pkg.__file__).parent / "c"


def _runtime_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(RUNTIME_C.glob("*.h")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


class DatapathLoader:
    def __init__(self, kernel: Kernel, state_dir: str, netns: str | None, pin_root: str = PIN_ROOT,
                 scheduled_file: str | None = None):
        self.kernel = kernel
        self.state_dir = Path(state_dir)
        self.netns = netns
        # One pin directory per box, so boxes in several lab namespaces never share maps.
        self.pin_root = f"{pin_root}/{netns or 'host'}"
        self.stamp = self.state_dir / "loaded.json"
        # The paused devices (MACs), kept here so that a reboot's first load pauses them again.
        self.paused_file = self.state_dir / "paused.json"
        # The devices a schedule has off now: the devices service's word (`appliance.services.devices`),
        # paused by every load too, so an apply never lets them through until the service's next tick.
        self.scheduled_file = Path(scheduled_file) if scheduled_file else None

    def datapath(self, bridge: str) -> Datapath:
        """The box's datapath of `bridge` (for counters, trace, detach), attached or not."""
        return Datapath(bridge, netns=self.netns, pin_root=self.pin_root,
                        state_dir=self.state_dir, local_device=bridge, home_ports=HOME_PORTS,
                        dns_ports=DNS_PORTS)

    @classmethod
    def of(cls, box) -> "DatapathLoader":
        return cls(box.kernel, box.layout.datapath_dir, box.placement.host_ns,
                   scheduled_file=box.layout.devices_scheduled)

    @staticmethod
    def bridge_of(switch) -> Bridge:
        bridge = Bridge(switch.bridge, ports=switch.port_map)
        bridge.flows = switch.table()
        return bridge

    def _digest(self, switch) -> str:
        ifindex = {l.name: l.ifindex for l in self.kernel.links(self.netns)}
        what = {"flows": switch.flow_text(comments=False),
                "ports": [(p.name, p.number, p.link, ifindex.get(p.link)) for p in switch.ports],
                # A new runtime (an upgrade) is loaded even when the flows are the same.
                "runtime": _runtime_digest()}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()

    def load(self, switch) -> list[str]:
        digest = self._digest(switch)
        dp = self.datapath(switch.bridge)
        try:
            loaded = json.loads(self.stamp.read_text()).get("digest")
        except (FileNotFoundError, json.JSONDecodeError):
            loaded = None
        if loaded == digest and dp.attached():
            dp.set_paused(self.enforced())
            return []
        bridge = self.bridge_of(switch)
        res = dp.apply(bridge, {p.name: p.link for p in switch.ports})
        dp.set_paused(self.enforced())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.stamp.write_text(json.dumps({"digest": digest}))
        return [f"~ datapath {switch.bridge}: {len(bridge.flows)} flows on {len(res.devices)} ports"
                f" (+{res.added} -{res.removed} flows)"]

    def paused(self) -> set[str]:
        """The MACs of the devices paused until resumed (kept across reboots)."""
        return _macs(self.paused_file)

    def scheduled(self) -> set[str]:
        """The MACs a schedule has off now, as the devices service last wrote them."""
        return _macs(self.scheduled_file) if self.scheduled_file else set()

    def enforced(self) -> set[str]:
        """What dp_paused holds: paused until resumed, or off by a schedule."""
        return self.paused() | self.scheduled()

    def set_paused(self, bridge: str | None, macs) -> bool:
        """Keep `macs` as the paused devices and hand them to the running datapath of `bridge`
        at once (no apply). False when none runs (or no bridge is applied): the next load does."""
        macs = sorted(set(macs))
        durable.write_atomic(str(self.paused_file), json.dumps({"macs": macs}))
        if bridge is None:
            return False
        dp = self.datapath(bridge)
        return dp.attached() and dp.set_paused(set(macs) | self.scheduled())

    def unload(self, switch) -> list[str]:
        dp = self.datapath(switch.bridge)
        if not dp.attached():
            # A first load the verifier refused made the pin directories and nothing in them.
            self._remove_empty_dirs(Path(dp.pin_dir))
            return []
        dp.detach()
        self.stamp.unlink(missing_ok=True)
        self._remove_empty_dirs(None)
        return [f"- datapath {switch.bridge}"]

    def _remove_empty_dirs(self, first: Path | None) -> None:
        for directory in (*([first] if first else []), Path(self.pin_root), Path(self.pin_root).parent):
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue  # the datapath took it with its own directory
            except OSError:
                break  # not empty: another bridge or box uses it


def _macs(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text()).get("macs", []))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, AttributeError):
        return set()
