"""The DHCPv6 server of the virtual gateway: dhcpkit's `ipv6-dhcpd`, with our fixes.

    python -m appliance.services.dhcp.dhcp6 CONFIG [-v]

Runs dhcpkit's own `main` after `dhcpkit_fixes.apply()`: the fixes live
here, in our wrapper, and the installed package stays as released.
"""
from __future__ import annotations

import sys

from appliance.services.dhcp import dhcpkit_fixes


def main(argv: list[str] | None = None) -> int:
    dhcpkit_fixes.apply()
    from dhcpkit.ipv6.server import main as dhcpkit_main

    try:
        return dhcpkit_main.main(sys.argv[1:] if argv is None else argv)
    except Exception as e:  # dhcpkit's own `run` logs and exits 1 the same way
        dhcpkit_main.logger.exception("Error: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
