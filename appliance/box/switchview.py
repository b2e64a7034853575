"""The box's own bridge, for the vswitch CLI (`./manage.py ofctl|appctl`).

The bridges of `vsctl` live in the CLI's store; the box's bridge lives in
the applied plan and its datapath in the box's pin directory. With this,
``./manage.py ofctl dump-flows vswitch [--netns=PREFIX-box]`` shows the
applied flows with the running program's counters, and ``appctl
ofproto/trace`` and ``ofctl monitor`` work on it, as the console's switch
page does. The box's flows are read-only here: they change by applying
settings (custom flows are part of the settings document).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AppliedBridge:
    bridge: object  # appliance.switch.bridge.Bridge
    loader: object  # appliance.box.switchload.DatapathLoader

    def datapath(self):
        """The running datapath, or None when none is attached."""
        dp = self.loader.datapath(self.bridge.name)
        return dp if dp.attached() else None

    def flow_stats(self):
        dp = self.datapath()
        if dp is None:
            return None
        try:
            return dp.flow_stats(self.bridge.flows)
        except OSError:
            return None  # not root: no access to the pinned maps


def applied_bridge(name: str, netns: str | None = None) -> AppliedBridge | None:
    """The box's applied bridge if it is called `name` (in the box of `netns`)."""
    from appliance.box.cli import box_for
    from appliance.box.switchload import DatapathLoader

    box = box_for(netns)
    try:
        plan = box.applied_plan()
    except (OSError, ValueError):
        return None
    if plan is None or plan.switch.bridge != name:
        return None
    return AppliedBridge(DatapathLoader.bridge_of(plan.switch), DatapathLoader.of(box))
