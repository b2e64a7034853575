from django.core.management.base import BaseCommand

from appliance.box import cli


class Command(BaseCommand):
    help = "Plan and apply the box's settings; --dry-run prints the plan's diff only."

    def add_arguments(self, parser):
        parser.add_argument("--config", "--settings-file", dest="settings",
                            help="settings document (YAML or JSON); default: the applied one. "
                                 "`apply --settings FILE` works too (manage.py maps it)")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--boot", action="store_true",
                            help="at boot: the applied settings, else the last good ones, else the factory "
                                 "bridge (exit 3: last good, 4: factory; the console shows why)")
        cli.add_common(parser)

    def handle(self, *args, **opts):
        code = cli.apply(opts, out=self.stdout.write)
        if code:
            raise SystemExit(code)
