from django.core.management.base import BaseCommand

from appliance.lab import cli


class Command(BaseCommand):
    help = "The home-network lab in network namespaces: up, down, status, dhcp."

    def add_arguments(self, parser):
        cli.add_arguments(parser)

    def handle(self, *args, **opts):
        code = cli.run(opts, out=self.stdout.write)
        if code:
            raise SystemExit(code)
