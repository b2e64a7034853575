import argparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from appliance.switch import cli


class Command(BaseCommand):
    help = "Flows of a bridge, like ovs-ofctl: add-flow, add-flows, del-flows, dump-flows, lint."

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
        try:
            code = cli.run_ofctl(argv, out=self.stdout, state_dir=settings.STATE_DIR)
        except cli.CliError as e:
            raise CommandError(str(e)) from None
        if code:
            raise SystemExit(code)
