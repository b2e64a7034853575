"""A Box on fakes for the console's unit tests (kernel, switch, services and files in memory)."""
from appliance.box.fake import FakeServices, FakeSwitch, MemFs
from appliance.box.placement import Placement
from appliance.box.plan import Layout
from appliance.box.runtime import Box
from appliance.box.settings import default_settings
from appliance.box.status import Reading
from appliance.kernel import FakeKernel
from appliance.web.sources import LiveSources

GW_MAC = "02:4d:4f:44:45:4d"
UP_MAC, DOWN_MAC = "52:54:00:00:05:00", "52:54:00:00:01:00"
BOX = None
STATE = {"dir": "/nonexistent", "leases": [], "macs": None}  # macs: MAC -> MacStats; None: no datapath


def settings(**kw):
    return default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": GW_MAC}, **kw)


def new_box(state_dir: str) -> Box:
    k = FakeKernel()
    k.add_netns("lab-box")
    k.add_veth("lab-box", "enp5s0", None, "m0", mac=UP_MAC)
    k.add_veth("lab-box", "enp1s0", None, "h0", mac=DOWN_MAC)
    k.set_link("lab-box", "enp5s0", up=True)
    k.set_link("lab-box", "enp1s0", up=True)
    k.neighbours = {("lab-box", "192.168.1.1"): GW_MAC}  # the modem answers ARP
    return Box(placement=Placement.inside("lab-box"),
               layout=Layout(state_dir=f"{state_dir}/state", run_dir=f"{state_dir}/run"),
               kernel=k, switch=FakeSwitch(), services=FakeServices(), fs=MemFs())


def make_box() -> Box:
    return BOX


class FakeSources(LiveSources):
    """The live readers, with Kea's leases and the port counters made up."""

    def leases(self):
        return Reading(list(STATE["leases"]))

    def ports(self):
        applied = self.box.applied_settings()
        if applied is None:
            return Reading(problem="nothing applied yet")
        return Reading([{"name": applied.ports.uplink, "role": "uplink", "up": True, "rx_bytes": 1000,
                         "tx_bytes": 2000, "time": 1.0}])


    def device_counters(self):
        if STATE["macs"] is None:
            return Reading(problem="datapath not loaded")
        return Reading(dict(STATE["macs"]))

    def forget_device_counters(self, mac):
        return STATE["macs"] is not None and STATE["macs"].pop(mac, None) is not None


def make_sources():
    return FakeSources()
