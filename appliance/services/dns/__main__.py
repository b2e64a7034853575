"""The DNS server process: ``python -m appliance.services.dns --config FILE``.

The service supervisor starts it inside netns vproxy. SIGHUP re-reads the
file and swaps the policy atomically; an invalid file or list is logged with
its field or line and the running policy stays. SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvloop

from appliance.kernel.limits import raise_open_files
from appliance.services.entry import service_main
from . import collector
from .control import serve_control
from .server import DnsService
from .settings import SettingsError, load_settings_file

log = logging.getLogger("appliance.services.dns")


async def run(config: str) -> int:
    settings = load_settings_file(config)
    # Every TCP client and upstream connection is a descriptor: 1024 is a few hundred clients.
    raise_open_files(settings.open_files)
    service = DnsService(settings)
    await service.start()
    control = None
    if settings.control_socket:
        control = await serve_control(service, settings.control_socket)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloading: set[asyncio.Task] = set()

    async def reload() -> None:
        try:
            new = load_settings_file(config)
        except (SettingsError, OSError) as exc:
            log.error("reload refused, keeping the running policy: %s", exc)
            service.last_reload_error = str(exc)
            return
        errors = await service.reload(new)
        if errors:
            log.error("reload refused, keeping the running policy: %s", "; ".join(errors))
        else:
            log.info("reloaded %s", config)

    def on_hup() -> None:
        task = loop.create_task(reload())
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    full_passes = collector.start()  # the collector on a clock (collector.py)
    print(f"ready ports={','.join(map(str, service.bound_ports()))}", flush=True)
    await stop.wait()
    full_passes.cancel()
    if control is not None:
        control.close()
    await service.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    # uvloop: an event-loop turn costs a fraction of asyncio's, and at a few
    # thousand queries a second most turns carry one query.
    return service_main("python -m appliance.services.dns", run, SettingsError, argv,
                        loop_factory=uvloop.new_event_loop)


if __name__ == "__main__":
    sys.exit(main())
