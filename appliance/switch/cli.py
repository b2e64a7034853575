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
from pathlib import Path
from typing import Callable, TextIO

from .bridge import BridgeError, BridgeStore
from .datapath import hooks
from .datapath.events import monitor as run_monitor
from .flows import FlowTable
from .lint import format_findings, lint
from .packet import PacketError
from .parser import FlowSyntaxError, parse_del_match, parse_flow, parse_flows
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
    if not argv:
        raise CliError("usage: vsctl add-br|del-br|list-br|add-port|del-port|list-ports|show ...")
    flags = {a for a in argv if a.startswith("--") and a != "--"}
    args = [a for a in argv if a not in flags]
    cmd, rest = args[0], args[1:]
    store = BridgeStore(state_dir)
    try:
        if cmd == "add-br":
            _need(rest, 1, "vsctl add-br BRIDGE")
            store.add_br(rest[0], may_exist="--may-exist" in flags)
        elif cmd == "del-br":
            _need(rest, 1, "vsctl del-br BRIDGE")
            store.del_br(rest[0], if_exists="--if-exists" in flags)
        elif cmd == "list-br":
            for name in sorted(store.bridges):
                out.write(name + "\n")
            return 0
        elif cmd == "add-port":
            _need(rest, 2, "vsctl add-port BRIDGE PORT [ofport_request=N]")
            br, port = rest[0], rest[1]
            ofport = _ofport_request(port, rest[2:])
            store.add_port(br, port, ofport, may_exist="--may-exist" in flags)
        elif cmd == "del-port":
            _need(rest, 1, "vsctl del-port [BRIDGE] PORT")
            if len(rest) >= 2:
                store.get(rest[0]).del_port(rest[1], if_exists="--if-exists" in flags)
            else:
                try:
                    b = store.port_to_bridge(rest[0])
                except BridgeError:
                    if "--if-exists" in flags:
                        return 0
                    raise
                b.del_port(rest[0])
        elif cmd == "list-ports":
            _need(rest, 1, "vsctl list-ports BRIDGE")
            for name in sorted(store.get(rest[0]).ports):
                out.write(name + "\n")
            return 0
        elif cmd == "show":
            for name in sorted(store.bridges):
                b = store.bridges[name]
                out.write(f'    Bridge {name}\n')
                for pname, num in sorted(b.ports.items(), key=lambda kv: kv[1]):
                    out.write(f'        Port {pname}\n            ofport: {num}\n')
                out.write(f'        flows: {len(b.flows)}\n')
            return 0
        else:
            raise CliError(f"vsctl: unknown command {cmd!r}")
    except BridgeError as e:
        raise CliError(f"vsctl: {e}") from None
    store.save()
    return 0


def _ofport_request(port: str, extra: list[str]) -> int | None:
    """`ofport_request=N` or `-- set Interface PORT ofport_request=N`."""
    if not extra:
        return None
    if extra[0] == "--":
        extra = extra[1:]
        if extra[:2] != ["set", "Interface"] or len(extra) < 4 or extra[2] != port:
            raise CliError(f"vsctl: expected '-- set Interface {port} ofport_request=N'")
        extra = extra[3:]
    if len(extra) != 1 or not extra[0].startswith("ofport_request="):
        raise CliError(f"vsctl: unexpected arguments {' '.join(extra)!r} (only ofport_request=N)")
    try:
        return int(extra[0].split("=", 1)[1])
    except ValueError:
        raise CliError(f"vsctl: {extra[0]!r}: ofport_request takes a number") from None


def _read(path: str, stdin: TextIO | None) -> str:
    if path == "-":
        return (stdin or sys.stdin).read()
    try:
        return Path(path).read_text()
    except OSError as e:
        raise CliError(f"ofctl: cannot read {path}: {e.strerror}") from None


def run_ofctl(argv: list[str], out: TextIO = sys.stdout, state_dir: Path | str | None = None,
              stdin: TextIO | None = None, box_bridge: BoxBridge | None = None) -> int:
    if not argv:
        raise CliError("usage: ofctl add-flow|add-flows|replace-flows|del-flows|dump-flows|lint BRIDGE ...")
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if a not in flags]
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
            br.flows.add(parse_flow(" ".join(rest[1:]), pm))
        elif cmd in ("add-flows", "replace-flows"):
            _need(rest, 2, f"ofctl {cmd} BRIDGE FILE")
            new = parse_flows(_read(rest[1], stdin), pm)  # all or nothing
            if cmd == "replace-flows":
                br.flows = FlowTable(new)
            else:
                br.flows.extend(new)
        elif cmd == "del-flows":
            if len(rest) > 1:
                match, table, prio = parse_del_match(" ".join(rest[1:]), pm)
            else:
                match, table, prio = None, None, None
            br.flows.delete(match, table, prio, strict="--strict" in flags)
        elif cmd == "dump-flows":
            flows = br.flows
            if len(rest) > 1:
                match, table, _ = parse_del_match(" ".join(rest[1:]), pm)
                flows = FlowTable(f for f in br.flows
                                  if match.covers(f.match) and (table is None or f.table == table))
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
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if a not in flags]
    if not args or args[0] != "ofproto/trace":
        raise CliError("usage: appctl ofproto/trace BRIDGE FLOW [--datapath]")
    _need(args, 3, "appctl ofproto/trace BRIDGE FLOW [--datapath]")
    store = BridgeStore(state_dir)
    text = " ".join(args[2:])
    try:
        try:
            br = store.get(args[1])
        except BridgeError:
            boxed = _box_bridge(args[1], flags, box_bridge)
            if boxed is None:
                raise
            br = boxed.bridge
            # The box's health register as the datapath has it now (reg15).
            text = boxed.trace_input(text)
        packet, result = trace(br, text)
    except (BridgeError, FlowSyntaxError, PacketError) as e:
        raise CliError(f"ofproto/trace: {e}") from None
    extra: list[str] = []
    if "--datapath" in flags:
        try:
            extra = list(hooks.trace_datapath(br, packet, result))
        except hooks.DatapathUnavailable as e:
            raise CliError(f"ofproto/trace: --datapath: {e}") from None
    out.write(format_trace(br, packet, result, extra))
    return 0
