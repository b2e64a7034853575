#!/usr/bin/env python3
"""Django's command-line utility for the appliance (console, lab, vswitch)."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.web.settings")
    from django.core.management import execute_from_command_line

    argv = list(sys.argv)
    if len(argv) > 1 and argv[1] == "apply":
        # `apply --settings FILE` names the box's settings document, not a
        # Django settings module (which Django's own --settings would take).
        argv = [("--config" if a == "--settings" else
                 "--config=" + a.split("=", 1)[1] if a.startswith("--settings=") else a) for a in argv]
    execute_from_command_line(argv)


if __name__ == "__main__":
    main()
