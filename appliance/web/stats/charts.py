"""What the charts show that is more than one series: the devices that moved the most bytes."""
from __future__ import annotations

from appliance.web import sources


def top_devices(step: int, since: int, limit: int, totals: dict[str, float] | None = None) -> list[dict]:
    """[{mac, name, rx_bytes, tx_bytes}] of the `limit` devices with the most bytes both ways
    since `since`, from the devices' series (`dev.MAC.rx_bytes`, `dev.MAC.tx_bytes`);
    `totals`: those series' sums, when the caller has read them already."""
    if totals is None:
        totals = sources.get().series_totals("dev.", step, since)
    by_mac: dict[str, dict] = {}
    for name, value in totals.items():
        mac, _, what = name[len("dev."):].rpartition(".")
        if mac and mac != "all" and what in ("rx_bytes", "tx_bytes"):
            by_mac.setdefault(mac, {"mac": mac, "name": "", "rx_bytes": 0.0, "tx_bytes": 0.0})[what] = value
    top = sorted(by_mac.values(), key=lambda d: (-(d["rx_bytes"] + d["tx_bytes"]), d["mac"]))[:limit]
    if top:
        from appliance.web.devices.models import Device

        names = dict(Device.objects.filter(mac__in=[d["mac"] for d in top]).values_list("mac", "name"))
        for d in top:
            d["name"] = names.get(d["mac"], "")
    return top
