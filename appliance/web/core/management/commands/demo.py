from django.core.management.base import BaseCommand

from appliance.lab import demo
from appliance.lab.topology import LabError


class Command(BaseCommand):
    help = "The demo: the lab and the console (Redis, Celery worker, the ASGI server) until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--prefix", default="lab")
        parser.add_argument("--clients", type=int, default=3)
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--redis-port", type=int, default=6379)
        parser.add_argument("--no-apply", action="store_true", help="leave the box a plain bridge")

    def handle(self, *args, **o):
        try:
            code = demo.run(o["prefix"], o["clients"], o["port"], o["redis_port"], out=self.stdout.write,
                            apply=not o["no_apply"])
        except LabError as e:
            self.stderr.write(f"demo: {e}")
            code = 2
        if code:
            raise SystemExit(code)
