"""Which box a process manages: the environment -> a `Box`, for the CLI, the console and the services.

The one set of variables, read here and nowhere else:

| variable               | what                                                   | default                          |
| ---------------------- | ------------------------------------------------------ | -------------------------------- |
| `APPLIANCE_HOST_NETNS` | the namespace that is the box's hardware (the lab's    | empty: this machine              |
|                        | `PREFIX-box`); its services' namespaces are prefixed   |                                  |
| `APPLIANCE_BOX_STATE`  | the box's state (`Layout.state_dir`)                   | /var/lib/appliance[/NETNS]       |
| `APPLIANCE_BOX_RUN`    | its runtime files (`Layout.run_dir`)                   | /run/appliance[/NETNS]           |
| `APPLIANCE_SERVICES`   | `systemd`: its services are systemd units (the image); | the supervisor, under            |
|                        | anything else: the supervisor runs them                | RUN/services                     |

Command-line options (`--netns`, `--state-dir`, `--run-dir`) win over the
variables. A box inside a namespace keeps its state and runtime files apart
from any other box on the machine, so `--netns lab-box` alone finds the
demo's box.
"""
from __future__ import annotations

import os
from typing import Mapping

from appliance.box.layout import RUN_ROOT, STATE_ROOT, Layout
from appliance.box.placement import Placement
from appliance.box.protocols import FileSystem, ServiceRunner, SwitchLoader
from appliance.box.runtime import Box
from appliance.kernel import Kernel
from appliance.services.supervisor import Supervisor
from appliance.services.units import SystemdUnits

HOST_NETNS, BOX_STATE, BOX_RUN, SERVICES = (
    "APPLIANCE_HOST_NETNS", "APPLIANCE_BOX_STATE", "APPLIANCE_BOX_RUN", "APPLIANCE_SERVICES")


def placement(netns: str | None = None, env: Mapping[str, str] = os.environ) -> Placement:
    netns = netns if netns is not None else env.get(HOST_NETNS) or None
    return Placement.inside(netns) if netns else Placement()


def layout(netns: str | None = None, state: str | None = None, run: str | None = None,
           env: Mapping[str, str] = os.environ) -> Layout:
    netns = placement(netns, env).host_ns
    suffix = f"/{netns}" if netns else ""
    return Layout(state_dir=state or env.get(BOX_STATE) or f"{STATE_ROOT}{suffix}",
                  run_dir=run or env.get(BOX_RUN) or f"{RUN_ROOT}{suffix}")


def service_runner(where: Layout, env: Mapping[str, str] = os.environ) -> ServiceRunner:
    """systemd units on the image (`APPLIANCE_SERVICES=systemd`), else the supervisor.

    The apply starts services through it and the console asks it their
    state, so both always talk to the same one.
    """
    if env.get(SERVICES) == "systemd":
        return SystemdUnits()
    return Supervisor(where.services_dir)


def box(netns: str | None = None, state: str | None = None, run: str | None = None, *,
        env: Mapping[str, str] = os.environ, kernel: Kernel | None = None, switch: SwitchLoader | None = None,
        fs: FileSystem | None = None) -> Box:
    """The box on this machine, or inside a lab's box namespace (`netns="lab-box"`).

    `kernel`, `switch` and `fs` replace the machine's, as tests do.
    """
    where = layout(netns, state, run, env)
    return Box(placement=placement(netns, env), layout=where, kernel=kernel, switch=switch,
               services=service_runner(where, env), fs=fs)


# ---------------------------------------------------------------- the command line

def add_arguments(parser) -> None:
    """--netns, --state-dir, --run-dir: the box a command acts on (over the variables)."""
    parser.add_argument("--netns", help=f"the box inside this namespace (the lab's PREFIX-box); ${HOST_NETNS}")
    parser.add_argument("--state-dir", help=f"the box's state (default {STATE_ROOT}[/NETNS]); ${BOX_STATE}")
    parser.add_argument("--run-dir", help=f"its runtime files (default {RUN_ROOT}[/NETNS]); ${BOX_RUN}")


def from_options(opts: Mapping) -> Box:
    """The box named by `add_arguments`' options, else by the environment."""
    return box(opts.get("netns"), opts.get("state_dir"), opts.get("run_dir"))
