from django.core.management.base import BaseCommand

from appliance.box import cli


class Command(BaseCommand):
    help = "Remove everything the box made (services, datapath, namespaces, links); state stays."

    def add_arguments(self, parser):
        cli.add_common(parser)

    def handle(self, *args, **opts):
        raise SystemExit(cli.teardown(opts, out=self.stdout.write))
