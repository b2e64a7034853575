from django.core.management.base import BaseCommand

from appliance.box import cli


class Command(BaseCommand):
    help = "Plan and apply the box's settings; --dry-run prints the plan's diff only."

    def add_arguments(self, parser):
        parser.add_argument("--config", "--settings-file", dest="settings",
                            help="settings document (YAML or JSON); default: the applied one. "
                                 "`apply --settings FILE` works too (manage.py maps it)")
        parser.add_argument("--dry-run", action="store_true")
        cli.add_common(parser)

    def handle(self, *args, **opts):
        code = cli.apply(opts, out=self.stdout.write)
        if code:
            raise SystemExit(code)
