"""Without a kernel: C lines map back to flows, verifier logs are read,
controller events print like ovs-ofctl monitor, `ofctl monitor` options."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from appliance.kernel.bpf import BpfError
from appliance.switch import cli
from appliance.switch.bridge import seed_bridge
from appliance.switch.datapath import contract as C
from appliance.switch.datapath.compiler import compile_table
from appliance.switch.datapath.events import format_event
from appliance.switch.datapath.verifier import VerifierError, _reason, refused_instruction
from appliance.switch.flows import FlowTable
from appliance.switch.packet import Packet, ipv4, mac
from appliance.switch.parser import parse_flow, parse_flows

SEED = Path(__file__).resolve().parents[3] / "data" / "seed-flows.txt"


def seed():
    br = seed_bridge()
    return br, FlowTable(parse_flows(SEED.read_text(), br.port_map))


@pytest.mark.parametrize("strategy", ["linear", "tuple"])
def test_every_flow_comment_and_action_line_maps_to_its_flows(strategy):
    br, t = seed()
    prog = compile_table(t, br.port_names, strategy=strategy)
    src = prog.source.split("\n")
    for flow in t:
        comment = "/* " + flow.to_ofctl(br.port_names) + " */"
        line = next(i + 1 for i, text in enumerate(src) if text.strip() == comment)
        assert flow in prog.flows_at(line)
        assert prog.flows_at(line + 1) == (flow,)        # its condition
    # An action list several flows share names all of them.
    rewrite = next(i + 1 for i, text in enumerate(src) if "dp_set_dl_dst" in text)
    assert sorted(f.priority for f in prog.flows_at(rewrite)) == [499, 500]
    assert prog.flows_at(1) == ()                           # the file's own lines


LOG = """\
func#0 @0
0: R1=ctx() R10=fp0
; if (len > DP_EVENT_BYTES) @ dp_runtime.h:405
1240: (25) if r2 > 0x80 goto pc+1
; if (bpf_skb_load_bytes(skb, 0, ev->data, len) < 0) @ dp_runtime.h:412
1254: (85) call bpf_skb_load_bytes#26
R4 invalid zero-sized read: u64=[0,127]
processed 3236 insns (limit 1000000) max_states_per_insn 10 total_states 269
"""


def test_verifier_log_gives_the_refused_instruction_and_the_reason():
    assert refused_instruction(LOG) == 1254
    assert _reason(LOG) == "R4 invalid zero-sized read: u64=[0,127]"


def test_verifier_error_names_the_flows_and_keeps_the_log():
    br = seed_bridge()
    flow = parse_flow("priority=600,udp,tp_dst=9999,actions=controller", br.port_map)
    err = VerifierError(BpfError("load dp-x.o", 13, LOG), (flow,), "dp-x.c:121", br.port_names)
    first = str(err).splitlines()[0]
    assert ("the verifier rejected the program in flow 'priority=600,udp,tp_dst=9999 "
            "actions=CONTROLLER:65535' (line 1), at dp-x.c:121: R4 invalid zero-sized read") in first
    assert err.log == LOG and err.flows == (flow,)
    assert isinstance(err, BpfError)


def test_event_prints_like_an_ovs_packet_in():
    br = seed_bridge()
    flow = parse_flow("cookie=0x2a,priority=600,udp,tp_dst=9999,actions=controller", br.port_map)
    frame = Packet(dl_src=mac("02:00:00:00:00:50"), dl_dst=mac("02:00:00:00:00:08"), dl_type=0x0800,
                   nw_proto=17, nw_src=ipv4("192.168.1.50"), nw_dst=ipv4("192.168.1.8"),
                   tp_src=40000, tp_dst=9999, nw_ttl=64).to_bytes()
    ev = C.Event(in_port=2, slot=15, table=0, length=300, data=frame)
    text = format_event(ev, flow, br.port_names)
    head, pkt, named = text.splitlines()
    assert head == ("NXT_PACKET_IN2 (xid=0x0): table_id=0 cookie=0x2a total_len=300 "
                    f"in_port=downlink (via action) data_len={len(frame)} (unbuffered)")
    assert pkt.startswith("in_port=downlink,dl_src=02:00:00:00:00:50,dl_dst=02:00:00:00:00:08")
    assert "udp_dst=9999" in pkt
    assert named == " flow: " + flow.to_ofctl(br.port_names)
    gone = format_event(ev, None, br.port_names).splitlines()[2]
    assert gone == " flow: (slot 15: not in the current table)"


@pytest.mark.parametrize("argv, message", [
    (["--count=0"], "must be positive"),
    (["--count=x"], "--count takes a whole number"),
    (["--timeout=-1"], "must be positive"),
    (["--bogus=1"], "unknown option --bogus"),
])
def test_monitor_options_are_checked(tmp_path, argv, message):
    cli.run_vsctl(["add-br", "br0"], out=io.StringIO(), state_dir=tmp_path)
    with pytest.raises(cli.CliError, match=message):
        cli.run_ofctl(["monitor", "br0", *argv], out=io.StringIO(), state_dir=tmp_path)


def test_monitor_without_a_running_datapath_says_so(tmp_path):
    name = "nodp-unit"
    cli.run_vsctl(["add-br", name], out=io.StringIO(), state_dir=tmp_path)
    with pytest.raises(cli.CliError, match=f"no compiled datapath runs for bridge {name}"):
        cli.run_ofctl(["monitor", name, "--timeout=0.1"], out=io.StringIO(), state_dir=tmp_path)
