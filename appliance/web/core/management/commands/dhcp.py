from django.core.management.base import BaseCommand

from appliance.services.dhcp import cli


class Command(BaseCommand):
    help = "The box's DHCP server (Kea): leases, status, reload."

    def add_arguments(self, parser):
        cli.add_arguments(parser)

    def handle(self, *args, **opts):
        code = cli.run(opts, out=self.stdout.write)
        if code:
            raise SystemExit(code)
