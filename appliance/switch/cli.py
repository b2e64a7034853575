"""The vswitch's command line: `vsctl`, `ofctl` and `appctl`, as OVS users know them.

Each ``run_*`` takes the argument list (after the command name), writes to
`out`, and returns an exit status; errors raise `CliError` with the message
to print. The Django management commands are thin wrappers around these.

    vsctl  add-br BR | del-br BR | list-br
           add-port BR PORT [ofport_request=N | -- set Interface PORT ofport_request=N]
           del-port [BR] PORT | list-ports BR | show
    ofctl  add-flow BR FLOW | add-flows BR FILE|- | replace-flows BR FILE|-
           del-flows BR [--strict] [MATCH] | dump-flows BR [MATCH] [--no-names]
           lint BR [FILE|-] | monitor BR [--count=N] [--timeout=SECS]
    appctl ofproto/trace BR FLOW [--datapath]

The compiled datapath answers through ``appliance.switch.datapath.hooks``:
dump-flows shows n_packets/n_bytes from the running program's counters
(without a running program it prints the `--no-stats` form: there are no
counters to show), `ofproto/trace --datapath` appends what the compiled
program did with the packet, and `ofctl monitor` prints its controller
events (packet-ins).

A bridge that is not in the store may be the box's own: the caller passes
`box_bridge(name, netns)` (the management commands pass the box's, see
`appliance.box.status`), and dump-flows, lint, monitor and ofproto/trace
read it (``--netns=NS`` names the lab's box namespace); changing its flows
is the apply's job.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, TextIO

from . import vsctl
from .bridge import BridgeError, BridgeStore
from .datapath import hooks
from .datapath.events import monitor as run_monitor
from .flows import FlowTable
from .lint import format_findings, lint
from .packet import PacketError
from .parser import FlowSyntaxError, parse_filter, parse_flow, parse_flows
from .trace import format_trace, trace


class CliError(Exception):
    """A user error: the message is printed, the exit status is 1."""


READ_ONLY = ("dump-flows", "lint", "monitor")

# (bridge name, --netns or None) -> the box's applied bridge of that name, or None.
# What it returns has `.bridge` (a Bridge), `.datapath()` and `.flow_stats()`.
BoxBridge = Callable[[str, "str | None"], object]


def _box_bridge(name: str, flags: set[str], box_bridge: BoxBridge | None):
    """The box's applied bridge called `name`, or None."""
    if box_bridge is None:
        return None
    netns = next((f.split("=", 1)[1] for f in flags if f.startswith("--netns=")), None)
    return box_bridge(name, netns)


def _need(args: list[str], n: int, usage: str) -> None:
    if len(args) < n:
        raise CliError(f"usage: {usage}")


def run_vsctl(argv: list[str], out: TextIO = sys.stdout, state_dir: Path | str | None = None) -> int:
    store = BridgeStore(state_dir)
    try:
        changed = vsctl.run(argv, out, store)
    except BridgeError as e:
        raise CliError(f"vsctl: {e}") from None
    if changed:
        store.save()
    return 0


def _read(path: str, stdin: TextIO | None) -> str:
    if path == "-":
        return (stdin or sys.stdin).read()
    try:
        return Path(path).read_text()
    except OSError as e:
        raise CliError(f"ofctl: cannot read {path}: {e.strerror}") from None


PROTOCOLS = ("OpenFlow10", "OpenFlow11", "OpenFlow12", "OpenFlow13", "OpenFlow14",
             "OpenFlow15", "OpenFlow10-table_id", "NXM-table_id", "OXM-OpenFlow12",
             "OXM-OpenFlow13", "OXM-OpenFlow14", "OXM-OpenFlow15", "any")
_OFCTL_FLAGS = {"--strict", "--names", "--no-names", "--no-stats", "--stats", "--sort", "--rsort",
                "--readd", "--bundle", "--color", "--no-color", "--more", "--read-only", "--verbose"}
_OFCTL_VALUED = ("--netns=", "--count=", "--timeout=", "--sort=", "--rsort=", "--flow-format=",
                 "--color=", "--verbose=")


def _version(protocol: str) -> int:
    digits = "".join(c for c in protocol if c.isdigit())
    return int(digits[:2]) if digits else 10


def ofctl_options(argv: list[str]) -> tuple[set[str], list[str], list[str]]:
    """(flags, protocols, words) from an ovs-ofctl command line: `-O X`,
    `-OX`, `--protocols=X`, `--protocols X`, and the flags it takes."""
    flags: set[str] = set()
    protocols: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        value = None
        if a in ("-O", "--protocols"):
            if i + 1 >= len(argv):
                raise CliError(f"ofctl: {a} needs a protocol (e.g. {a} OpenFlow13)")
            value = argv[i + 1]
            i += 1
        elif a.startswith("--protocols="):
            value = a.split("=", 1)[1]
        elif a.startswith("-O") and len(a) > 2:
            value = a[2:]
        elif a in _OFCTL_FLAGS or a.startswith(_OFCTL_VALUED):
            flags.add(a)
        elif a.startswith("--"):
            raise CliError(f"ofctl: unknown option {a} (options: -O/--protocols, --strict, "
                           "--names, --no-names, --no-stats, --sort, --rsort)")
        else:
            words.append(a)
        if value is not None:
            for p in value.split(","):
                match = next((q for q in PROTOCOLS if q.lower() == p.strip().lower()), None)
                if match is None:
                    raise CliError(f"ofctl: {p!r}: unknown protocol (one or more of "
                                   f"{', '.join(PROTOCOLS[:6])}, comma separated)")
                protocols.append(match)
        i += 1
    return flags, protocols, words


def run_ofctl(argv: list[str], out: TextIO = sys.stdout, state_dir: Path | str | None = None,
              stdin: TextIO | None = None, box_bridge: BoxBridge | None = None) -> int:
    if not argv:
        raise CliError("usage: ofctl [-O PROTOCOL] add-flow|add-flows|mod-flows|replace-flows|"
                       "del-flows|dump-flows|lint BRIDGE ...")
    flags, protocols, args = ofctl_options(argv)
    # The first protocol is what the flows are sent as (OVS negotiates the
    # highest both sides speak; the box speaks them all).
    of11 = bool(protocols) and max(protocols, key=_version) not in ("OpenFlow10",
                                                                      "OpenFlow10-table_id",
                                                                      "NXM-table_id", "any")
    if not args:
        raise CliError("usage: ofctl [-O PROTOCOL] COMMAND BRIDGE ...")
    cmd, rest = args[0], args[1:]
    _need(rest, 1, f"ofctl {cmd} BRIDGE ...")
    store = BridgeStore(state_dir)
    boxed = None
    try:
        br = store.get(rest[0])
    except BridgeError as e:
        boxed = _box_bridge(rest[0], flags, box_bridge)
        if boxed is None:
            raise CliError(f"ofctl: {e}") from None
        if cmd not in READ_ONLY:
            raise CliError(f"ofctl: {cmd}: {rest[0]} is the box's bridge; its flows change by "
                           "applying settings (custom flows are part of the settings document)")
        br = boxed.bridge
    pm = br.port_map
    names = None if "--no-names" in flags else br.port_names
    try:
        if cmd == "add-flow":
            _need(rest, 2, "ofctl add-flow BRIDGE FLOW")
            br.flows.add(parse_flow(" ".join(rest[1:]), pm, of11=of11))
        elif cmd in ("add-flows", "replace-flows"):
            _need(rest, 2, f"ofctl {cmd} BRIDGE FILE")
            new = parse_flows(_read(rest[1], stdin), pm, of11=of11)  # all or nothing
            if cmd == "replace-flows":
                br.flows = FlowTable(new)
            else:
                br.flows.extend(new)
        elif cmd == "mod-flows":
            _need(rest, 2, "ofctl mod-flows BRIDGE FLOW")
            new = parse_flow(" ".join(rest[1:]), pm, of11=of11)
            strict = "--strict" in flags
            changed = [f for f in br.flows if f.table == new.table and (
                (f.match == new.match and f.priority == new.priority) if strict
                else new.match.covers(f.match))]
            for f in changed:
                br.flows.add(replace(f, actions=new.actions))
            if not changed and not strict:
                br.flows.add(new)  # OpenFlow 1.0's modify adds when nothing matches
        elif cmd == "del-flows":
            if len(rest) > 1:
                flt = parse_filter(" ".join(rest[1:]), pm)
            else:
                flt = {"match": None, "table": None, "priority": None, "cookie": 0, "cookie_mask": 0}
            br.flows.delete(flt["match"], flt["table"], flt["priority"], strict="--strict" in flags,
                            cookie=flt["cookie"], cookie_mask=flt["cookie_mask"])
        elif cmd == "dump-flows":
            flows = br.flows
            if len(rest) > 1:
                flt = parse_filter(" ".join(rest[1:]), pm)
                flows = FlowTable(f for f in br.flows if flt["match"].covers(f.match)
                                  and (flt["table"] is None or f.table == flt["table"])
                                  and f.cookie & flt["cookie_mask"] == flt["cookie"])
            stats = None
            if "--no-stats" in flags:
                pass
            elif boxed is not None:
                stats = boxed.flow_stats()
            else:
                stats = hooks.flow_stats(br)
            out.write(flows.to_ofctl(names, stats))
            return 0
        elif cmd == "monitor" and boxed is not None:
            dp = boxed.datapath()
            if dp is None:
                raise CliError(f"ofctl: monitor: no compiled datapath runs for bridge {br.name}")
            count, timeout = _monitor_limits(flags)
            run_monitor(dp, br.flows, out, names, count=count, timeout=timeout)
            return 0
        elif cmd == "monitor":
            count, timeout = _monitor_limits(flags)
            try:
                hooks.monitor(br, out, names, count=count, timeout=timeout, state_dir=state_dir)
            except hooks.DatapathUnavailable as e:
                raise CliError(f"ofctl: monitor: {e}") from None
            return 0
        elif cmd == "lint":
            flows = br.flows.flows
            if len(rest) > 1:
                flows = parse_flows(_read(rest[1], stdin), pm)
            findings = lint(flows, br)
            out.write(format_findings(findings, names))
            return 1 if any(f.severity == "error" for f in findings) else 0
        else:
            raise CliError(f"ofctl: unknown command {cmd!r}")
    except FlowSyntaxError as e:
        where = f"{rest[1]}:" if cmd in ("add-flows", "replace-flows", "lint") and len(rest) > 1 else ""
        raise CliError(f"ofctl: {where}{e} (nothing was changed)") from None
    store.save()
    return 0


def _monitor_limits(flags: set[str]) -> tuple[int | None, float | None]:
    """--count=N and --timeout=SECS of `ofctl monitor` (ovs-ofctl has --timeout)."""
    values = dict(f[2:].split("=", 1) for f in flags if "=" in f)
    unknown = set(values) - {"count", "timeout"}
    if unknown:
        raise CliError(f"ofctl: monitor: unknown option --{sorted(unknown)[0]}")
    try:
        count = int(values["count"]) if "count" in values else None
        timeout = float(values["timeout"]) if "timeout" in values else None
    except ValueError:
        raise CliError("ofctl: monitor: --count takes a whole number, --timeout seconds") from None
    if (count is not None and count < 1) or (timeout is not None and timeout <= 0):
        raise CliError("ofctl: monitor: --count and --timeout must be positive")
    return count, timeout


def run_appctl(argv: list[str], out: TextIO = sys.stdout, state_dir: Path | str | None = None,
               box_bridge: BoxBridge | None = None) -> int:
    flags = {a for a in argv if a.startswith("--") or a == "-generate"}
    args = [a for a in argv if a not in flags]
    usage = "usage: appctl ofproto/trace BRIDGE FLOW [-generate] [--datapath] | fdb/show BRIDGE | fdb/flush [BRIDGE]"
    if not args or args[0] not in ("ofproto/trace", "fdb/show", "fdb/flush"):
        raise CliError(usage)
    store = BridgeStore(state_dir)
    if args[0].startswith("fdb/"):
        return _fdb(args, out, store, usage)
    _need(args, 3, "appctl ofproto/trace BRIDGE FLOW [-generate] [--datapath]")
    text = " ".join(args[2:])
    generate = "-generate" in flags or "--generate" in flags
    stored = True
    try:
        try:
            br = store.get(_dp_bridge(args[1], store))
        except BridgeError:
            boxed = _box_bridge(args[1], flags, box_bridge)
            if boxed is None:
                raise
            br = boxed.bridge
            stored = False
            # The box's health register as the datapath has it now (reg15).
            text = boxed.trace_input(text)
        packet, result = trace(br, text, generate=generate and stored)
    except (BridgeError, FlowSyntaxError, PacketError) as e:
        raise CliError(f"ofproto/trace: {e}") from None
    extra: list[str] = []
    if "--datapath" in flags:
        try:
            extra = list(hooks.trace_datapath(br, packet, result))
        except hooks.DatapathUnavailable as e:
            raise CliError(f"ofproto/trace: --datapath: {e}") from None
    out.write(format_trace(br, packet, result, extra))
    if generate and stored:
        store.save()  # what NORMAL learned and the flows learn() added
    return 0


def _dp_bridge(name: str, store: BridgeStore) -> str:
    """OVS's tests trace on the datapath ("ovs-dummy", "ovs-system"): with
    one bridge that is the one meant."""
    if name.startswith("ovs-") and name not in store.bridges and len(store.bridges) == 1:
        return next(iter(store.bridges))
    return name


def _fdb(args: list[str], out: TextIO, store: BridgeStore, usage: str) -> int:
    try:
        if args[0] == "fdb/show":
            _need(args, 2, "appctl fdb/show BRIDGE")
            br = store.get(args[1])
            out.write(br.macs.show(br.port_names))
            return 0
        bridges = [store.get(args[1])] if len(args) > 1 else list(store.bridges.values())
    except BridgeError as e:
        raise CliError(f"{args[0]}: {e}") from None
    for br in bridges:
        br.macs.flush()
    store.save()
    out.write("table successfully flushed\n")
    return 0
