"""Open vSwitch as the oracle: run Debian's OVS by hand in a temp dir and trace.

``OvsOracle`` starts its own `ovsdb-server` and `ovs-vswitchd
--enable-dummy` (no kernel module, no system datapath), each with its
sockets, pid and log files in a private temp dir, creates a bridge with
``datapath_type=dummy`` and dummy ports at the OpenFlow numbers asked for,
loads flow tables, and traces packets with ``ofproto/trace`` over the
`ovs` Python package's unixctl client. ``stop()`` (or leaving the ``with``
block) always stops both daemons and removes the dir.

Flows are loaded with cookie = their index + 1 in the table, so the trace
names exactly which of our flows matched. The comparison is on OpenFlow
ports: the datapath actions are mapped back through ``dpif/show``.

Used by tests/integration/switch and bench/classifier.py.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from appliance.switch import flows as FL
from appliance.switch.flows import Flow
from appliance.switch.packet import Packet

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
OVS_BINARIES = ("/usr/sbin/ovsdb-server", "/usr/sbin/ovs-vswitchd", "/usr/bin/ovs-vsctl",
                "/usr/bin/ovs-ofctl", "/usr/bin/ovsdb-tool")


def ovs_available() -> bool:
    return all(os.access(b, os.X_OK) for b in OVS_BINARIES) and os.path.exists(SCHEMA)


class OvsError(RuntimeError):
    pass


@dataclass
class OvsTrace:
    """What ofproto/trace said about one packet, in OpenFlow terms."""
    text: str
    lookups: list[tuple[int, int | None]] = field(default_factory=list)  # (table, cookie or None)
    # (ofport, dl_src, dl_dst, vlan_tci) for every datapath output; the
    # controller appears as (OFPP_CONTROLLER, None, None, None).
    outputs: Counter = field(default_factory=Counter)
    normal: list[str] = field(default_factory=list)  # what each NORMAL did
    final_l2: tuple[int, int, int] | None = None
    unparsed: list[str] = field(default_factory=list)


def _mac(s: str) -> int:
    return int(s.replace(":", ""), 16)


_LOOKUP_RE = re.compile(r"^\s*(\d+)\. (.*)$")
_COOKIE_RE = re.compile(r", cookie (0x[0-9a-f]+)")


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return [x.strip() for x in out if x.strip()]


def parse_trace(text: str, l2: tuple[int, int, int], odp_to_ofport: Mapping[int, int]) -> OvsTrace:
    """Parse ofproto/trace output. `l2` is the input packet's
    (dl_src, dl_dst, vlan_tci), the start state for the datapath actions."""
    tr = OvsTrace(text)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _LOOKUP_RE.match(line)
        if m and not line.startswith("Flow") and "bridge(" not in line:
            body = m.group(2)
            if body.startswith("No match"):
                tr.lookups.append((int(m.group(1)), None))
            else:
                c = _COOKIE_RE.search(body)
                tr.lookups.append((int(m.group(1)), int(c.group(1), 16) if c else 0))
        elif line.strip() == "NORMAL":
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            tr.normal.append(nxt)
    final = next((ln for ln in lines if ln.startswith("Final flow:")), None)
    if final is not None and "unchanged" not in final:
        tr.final_l2 = _l2_of(final, l2)
    else:
        tr.final_l2 = l2
    dp = next((ln for ln in lines if ln.startswith("Datapath actions:")), None)
    if dp is None:
        raise OvsError("trace has no 'Datapath actions' line:\n" + text)
    src, dst, tci = l2
    inner: list[int] = []  # tags under the outer one (QinQ), outermost first
    for act in _split_top(dp.split(":", 1)[1].strip()):
        if act.isdigit():
            tr.outputs[(odp_to_ofport.get(int(act), -int(act)), src, dst, tci)] += 1
        elif act == "drop":
            pass
        elif act.startswith("set(") and not act.startswith("set(eth("):
            pass  # L3/L4 rewrites: the comparison is on L2 and ports
        elif act.startswith("trunc("):
            pass  # output(max_len=N)'s cap on the next output's length
        elif act.startswith("set(eth("):
            for k, v in re.findall(r"(src|dst)=([0-9a-f:]+)", act):
                if k == "src":
                    src = _mac(v)
                else:
                    dst = _mac(v)
        elif act.startswith("push_vlan("):
            vid = int(re.search(r"vid=(\d+)", act).group(1))
            pcp = int(re.search(r"pcp=(\d+)", act).group(1))
            if tci:
                inner.insert(0, tci)
            tci = 0x1000 | (pcp << 13) | vid
        elif act == "pop_vlan":
            tci = inner.pop(0) if inner else 0
        elif act.startswith("userspace(") and "controller(" in act:
            tr.outputs[(FL.OFPP_CONTROLLER, None, None, None)] += 1
        else:
            tr.unparsed.append(act)
    # A table miss: OpenFlow 1.0 (what ovs-ofctl speaks here by default)
    # sends it to the controller, OpenFlow 1.3 and this project drop it.
    # Our documented rule is the 1.3 one, so a miss's packet-in is no output.
    misses = text.count('No match, and a "packet-in" is called for')
    key = (FL.OFPP_CONTROLLER, None, None, None)
    if misses and tr.outputs[key]:
        tr.outputs[key] -= min(misses, tr.outputs[key])
        if not tr.outputs[key]:
            del tr.outputs[key]
    return tr


def _l2_of(flow_line: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    src = re.search(r"dl_src=([0-9a-f:]{17})", flow_line)
    dst = re.search(r"dl_dst=([0-9a-f:]{17})", flow_line)
    tci = re.search(r"vlan_tci=(0x[0-9a-f]+)", flow_line)
    return (_mac(src.group(1)) if src else default[0], _mac(dst.group(1)) if dst else default[1],
            int(tci.group(1), 16) if tci else 0)


class OvsOracle:
    """A private Open vSwitch with one dummy bridge. Use as a context manager."""

    def __init__(self, ports: Mapping[str, int], bridge: str = "br0"):
        self.bridge = bridge
        self.ports = dict(ports)
        self.dir: Path | None = None
        self.client = None
        self.odp_to_ofport: dict[int, int] = {}
        self.flows: list[Flow] = []
        self._procs_started = False

    # -- lifecycle --------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        d = str(self.dir)
        env = dict(os.environ)
        env.update(OVS_RUNDIR=d, OVS_LOGDIR=d, OVS_DBDIR=d, OVS_SYSCONFDIR=d)
        return env

    def _run(self, *argv: str, input: str | None = None) -> str:
        p = subprocess.run(argv, env=self.env, input=input, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise OvsError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def vsctl(self, *args: str) -> str:
        return self._run("ovs-vsctl", f"--db=unix:{self.dir}/db.sock", "--timeout=30", *args)

    def start(self) -> "OvsOracle":
        if not ovs_available():
            raise OvsError("Open vSwitch is not installed (openvswitch-switch)")
        self.dir = Path(tempfile.mkdtemp(prefix=f"ovs-oracle-{os.getpid()}-"))
        d = self.dir
        try:
            self._run("ovsdb-tool", "create", f"{d}/conf.db", SCHEMA)
            self._procs_started = True
            self._run("ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
                      f"--unixctl={d}/ovsdb.ctl", f"--pidfile={d}/ovsdb.pid",
                      f"--log-file={d}/ovsdb.log", "--detach", "--no-chdir")
            self.vsctl("--no-wait", "init")
            self._run("ovs-vswitchd", f"unix:{d}/db.sock", "--enable-dummy=override",
                      "--disable-system", f"--unixctl={d}/vswitchd.ctl",
                      f"--pidfile={d}/vswitchd.pid", f"--log-file={d}/vswitchd.log",
                      "--detach", "--no-chdir")
            args = ["add-br", self.bridge, "--", "set", "bridge", self.bridge,
                    "datapath_type=dummy", "fail-mode=secure"]
            for name, num in self.ports.items():
                args += ["--", "add-port", self.bridge, name, "--", "set", "Interface", name,
                         "type=dummy", f"ofport_request={num}"]
            self.vsctl(*args)
            self._connect()
            self._map_ports()
        except BaseException:
            self.stop()
            raise
        return self

    def _connect(self) -> None:
        from ovs.unixctl.client import UnixctlClient
        err, client = UnixctlClient.create(f"{self.dir}/vswitchd.ctl")
        if err:
            raise OvsError(f"cannot connect to ovs-vswitchd's unixctl socket: {os.strerror(err)}")
        self.client = client

    def appctl(self, command: str, *args: str) -> str:
        err, error, result = self.client.transact(command, list(args))
        if err:
            raise OvsError(f"unixctl {command}: {os.strerror(err)}")
        if error is not None:
            raise OvsError(f"{command} {' '.join(args)}: {error.strip()}")
        return result

    def _map_ports(self) -> None:
        # "    uplink 1/1: (dummy)" -> odp 1 is OpenFlow port 1; LOCAL is "65534/100".
        for _ in range(50):
            text = self.appctl("dpif/show")
            found = re.findall(r"^\s+(\S+) (\d+)/(\d+):", text, re.M)
            self.odp_to_ofport = {int(odp): int(of) for _, of, odp in found}
            if len(self.odp_to_ofport) >= len(self.ports) + 1:
                return
            time.sleep(0.1)
        raise OvsError(f"ports did not all appear in dpif/show:\n{text}")

    def stop(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
            self.client = None
        if self.dir is None:
            return
        for name in ("vswitchd", "ovsdb"):
            pidfile = self.dir / f"{name}.pid"
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> "OvsOracle":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- flows and traces ---------------------------------------------------------

    def load_flows(self, flows: Iterable[Flow], protocol: str | None = None) -> None:
        """Replace the bridge's flows; flow i gets cookie i+1 for the trace.
        `protocol` is ovs-ofctl's -O (OpenFlow13 for push_vlan, set_field ...)."""
        from dataclasses import replace
        self.flows = list(flows)
        text = "\n".join(replace(f, cookie=i + 1).to_ofctl() for i, f in enumerate(self.flows))
        self.load_text(text, protocol)

    def load_text(self, text: str, protocol: str | None = None) -> None:
        """Replace the bridge's flows by a flow file's text, as given."""
        opts = ["-O", protocol] if protocol else []
        self._run("ovs-ofctl", *opts, "del-flows", self.bridge)
        if text.strip():
            path = self.dir / "flows.txt"
            path.write_text(text + "\n")
            self._run("ovs-ofctl", *opts, "add-flows", self.bridge, str(path))

    def dump_flows(self) -> str:
        return self._run("ovs-ofctl", "--no-stats", "dump-flows", self.bridge)

    def trace_text(self, flow_string: str, generate: bool = False) -> str:
        extra = ["-generate"] if generate else []
        return self.appctl("ofproto/trace", self.bridge, flow_string, *extra)

    def trace(self, packet, generate: bool = False) -> OvsTrace:
        """Trace one `Packet`; result in OpenFlow ports and flow indexes.
        `generate` (OVS's -generate) lets NORMAL learn and learn() add flows."""
        l2 = (packet.get("dl_src"), packet.get("dl_dst"), packet.get("vlan_tci"))
        return parse_trace(self.trace_text(packet.to_ofctl(), generate), l2, self.odp_to_ofport)

    def trace_frame(self, frame: bytes, in_port: int) -> OvsTrace:
        """Trace a raw Ethernet frame as OVS itself parses it (flow_extract:
        its extension headers, its ND options), not as our Packet reads it."""
        p = Packet.from_bytes(frame, in_port)
        l2 = (p.get("dl_src"), p.get("dl_dst"), p.get("vlan_tci"))
        text = self.appctl("ofproto/trace", self.bridge, f"in_port={in_port}", frame.hex())
        return parse_trace(text, l2, self.odp_to_ofport)

    def fdb_flush(self) -> None:
        self.appctl("fdb/flush", self.bridge)

    def flow_for_cookie(self, cookie: int | None) -> Flow | None:
        return None if cookie is None else self.flows[cookie - 1]


def expected_from_classifier(result, in_port: int, all_ports: Iterable[int],
                             trace: OvsTrace) -> Counter:
    """Our result as the multiset OvsTrace.outputs uses.

    NORMAL is not modelled by the classifier (the datapath hands it to a
    Linux bridge), so each NORMAL contributes what OVS's NORMAL did: a flood
    to every port but the input when the trace says it flooded, else nothing.
    """
    out: Counter = Counter()
    normals = iter(trace.normal)
    ports = sorted(set(all_ports) | {FL.OFPP_LOCAL})
    for ev in result.outputs:
        p = ev.packet
        l2 = (p.get("dl_src"), p.get("dl_dst"), p.get("vlan_tci"))
        if ev.port == FL.OFPP_CONTROLLER:
            out[(FL.OFPP_CONTROLLER, None, None, None)] += 1
        elif ev.port == FL.OFPP_NORMAL:
            what = next(normals, "")
            if "flooding" in what:
                for q in ports:
                    if q != p.get("in_port"):
                        out[(q,) + l2] += 1
        else:
            out[(ev.port,) + l2] += 1
    return out
