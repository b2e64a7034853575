from django.core.management.base import BaseCommand

from appliance.box import cli


class Command(BaseCommand):
    help = ("Each service of the box: running, answering its probe (healthy) or not and what the home "
            "gets meanwhile, its last failure; the health register; the last health events. "
            "Exit status 3 when a service is not healthy.")

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=10, help="how many of the last health events")
        cli.add_common(parser)

    def handle(self, *args, **opts):
        code = cli.show_status(opts, out=self.stdout.write)
        if code:
            raise SystemExit(code)
