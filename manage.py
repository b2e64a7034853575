#!/usr/bin/env python3
"""Django's command-line utility for the appliance (console, lab, vswitch)."""
import os
import sys
from pathlib import Path


def _into_venv():
    """Run under the checkout's .venv (what `make setup` made) when started by a Python without
    Django, as `./manage.py` is by the system's python3: the README's commands work as typed."""
    try:
        import django  # noqa: F401
    except ImportError:
        venv = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
        if venv.exists() and Path(sys.executable).absolute() != venv:
            os.execv(venv, [str(venv), *sys.argv])
        raise SystemExit("Django is missing: run `make setup` (it makes .venv) first") from None


def main():
    _into_venv()
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
