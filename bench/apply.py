"""A DHCP-pool apply on the lab box, with and without waking the watchdog, side by side.

    sudo .venv/bin/python bench/apply.py [--applies 8]

One box in the lab (`tests.support.boxlab`). Each apply changes the DHCP
pool's end, so Kea's configuration changes and the apply waits for the
watchdog to see every service answer (step 5). The rows take turns: "wake"
is the product (the apply sends a datagram to the watchdog's wake socket,
`appliance.services.health.watchdog.wake`, and the next round starts at
once); "no wake" waits for the watchdog's next round (every 0.25 s). The
issue's target (18): a DHCP-pool apply under 1 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from appliance.box.settings import parse_settings  # noqa: E402
from appliance.services.health import watchdog  # noqa: E402
from tests.support.boxlab import POOL, box_in_lab, settings_data  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--applies", type=int, default=8, help="per row")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/apply.py needs root (network namespaces)", file=sys.stderr)
        return 1
    real_wake = watchdog.wake
    rows: dict[str, list[float]] = {"wake": [], "no wake": []}
    with box_in_lab(Path(tempfile.mkdtemp(prefix="apply-bench-")), "a", clients=1) as (lab, box):
        # The first apply, and the first change after it, start what later ones only reload.
        for end in ("192.168.1.70", "192.168.1.71"):
            warm = settings_data(dhcp={"pools": [{"start": POOL[0], "end": end}], "lease_time": 600})
            if not box.apply(parse_settings(warm)).ok:
                raise RuntimeError("a warm-up apply failed")
        for i in range(args.applies):
            for n, label in enumerate(rows):
                watchdog.wake = real_wake if label == "wake" else (lambda path: False)
                end = f"192.168.1.{80 + (i % 2) * 10 + n}"  # a change every time
                settings = parse_settings(settings_data(dhcp={"pools": [{"start": POOL[0], "end": end}],
                                                              "lease_time": 600}))
                t0 = time.monotonic()
                result = box.apply(settings)
                rows[label].append(time.monotonic() - t0)
                if not result.ok:
                    raise RuntimeError(f"apply failed: {result.error}")
    watchdog.wake = real_wake
    base = statistics.median(rows["no wake"])
    print(f"\nDHCP-pool applies on the lab box, {args.applies} per row, taking turns "
          f"(sudo .venv/bin/python bench/apply.py --applies {args.applies})\n")
    print("| row | median s | x no wake | min s | max s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, times in rows.items():
        med = statistics.median(times)
        print(f"| {label} | {med:.3f} | {med / base:.2f} | {min(times):.3f} | {max(times):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
