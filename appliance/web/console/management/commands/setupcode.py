"""`manage.py setupcode`: print the first run's setup code (made now if there is none).

Prints nothing (and says why on stderr) once the admin exists. `make demo`
and the image's boot (`appliance-prepare`, which also puts it on the local
console's login prompt) run it; see appliance.web.console.setupcode.
"""
from django.core.management.base import BaseCommand

from appliance.web.console import setupcode


class Command(BaseCommand):
    help = "Print the one-time code /setup/ asks for (none once the admin account exists)."

    def handle(self, *args, **options):
        code = setupcode.ensure()
        if code is None:
            self.stderr.write("setupcode: the admin account exists; there is no setup code")
            return
        self.stdout.write(code)
