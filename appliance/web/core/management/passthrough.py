"""A management command that hands its whole command line to an OVS-style CLI."""
import argparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from appliance.box import locate, status
from appliance.switch import cli


def box_bridge(name: str, netns: str | None):
    """The applied bridge `name` of the box (in `netns`, the lab's box namespace), or None."""
    try:
        return status.applied_bridge(locate.box(netns), name)
    except (OSError, ValueError):
        return None  # no readable applied state: not the box's bridge then


class PassthroughCommand(BaseCommand):
    """Subclasses name `tool`, a function of `appliance.switch.cli` (run_ofctl, ...);
    `reads_box` when the tool also reads the box's own bridge."""

    tool = ""
    reads_box = False

    def add_arguments(self, parser):
        parser.add_argument("args", nargs=argparse.REMAINDER)

    def run_from_argv(self, argv):
        # Pass everything through untouched: flow text and OVS-style flags
        # (--strict, --no-names, -- set Interface ...) are not Django options.
        self._argv = argv[2:]
        return super().run_from_argv(argv[:2])

    def handle(self, *args, **opts):
        argv = getattr(self, "_argv", None)
        if argv is None:
            argv = list(args)
        extra = {"box_bridge": box_bridge} if self.reads_box else {}
        try:
            code = getattr(cli, self.tool)(argv, out=self.stdout, state_dir=settings.STATE_DIR, **extra)
        except cli.CliError as e:
            raise CommandError(str(e)) from None
        if code:
            raise SystemExit(code)
