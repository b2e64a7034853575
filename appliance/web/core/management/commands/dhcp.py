from django.core.management.base import BaseCommand

from appliance.services.dhcp import cli


class Command(BaseCommand):
    help = "The box's DHCP servers: Kea (leases, status, reload) and the DHCPv6 leases (leases6)."

    def add_arguments(self, parser):
        cli.add_arguments(parser)

    def handle(self, *args, **opts):
        code = cli.run(opts, out=self.stdout.write)
        if code:
            raise SystemExit(code)
