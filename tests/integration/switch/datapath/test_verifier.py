"""A table the verifier refuses names its flow, and the old program keeps running.

The runtime the product ships passes the verifier for every action, so the
refusal is provoked: a copy of the runtime headers whose controller action
hands bpf_skb_load_bytes an unbounded length.  The error must name the
flow with actions=controller (not a line of the generated C), say where,
and carry the verifier's reason; the program that ran before stays.
"""
from __future__ import annotations

import os
import shutil

import pytest

from appliance.switch.bridge import seed_bridge
from appliance.switch.datapath import build as B
from appliance.switch.datapath.datapath import Datapath
from appliance.switch.datapath.verifier import VerifierError
from appliance.switch.flows import FlowTable
from appliance.switch.parser import parse_flows
from tests.support.dpbox import DpBox


SEED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "data", "seed-flows.txt")
CONTROLLER_FLOW = "priority=600,udp,tp_dst=9999,actions=controller"


@pytest.fixture
def broken_runtime(tmp_path, monkeypatch):
    c_dir = tmp_path / "c"
    shutil.copytree(B.C_DIR, c_dir)
    h = c_dir / "dp_runtime.h"
    text = h.read_text()
    good = "\tlen = ((len - 1) & (DP_EVENT_BYTES - 1)) + 1;\n"
    assert good in text
    h.write_text(text.replace(good, "\tlen = skb->len;\n"))
    return c_dir


def table(extra: str = ""):
    br = seed_bridge()
    br.flows = FlowTable(parse_flows(open(SEED).read() + extra, br.port_map))
    return br


def prog_id(dp: Datapath) -> bytes:
    fd = dp.bpf.open_pinned(os.path.join(dp.pin_dir, "prog"))
    try:
        return os.readlink(f"/proc/self/fd/{fd}") + open(f"/proc/self/fdinfo/{fd}").read()
    finally:
        dp.bpf.close(fd)


def test_verifier_refusal_names_the_flow_and_keeps_the_old_program(tmp_path, broken_runtime,
                                                                  monkeypatch):
    box = DpBox()
    dp = Datapath("br0", netns=box.box, pin_root=f"/sys/fs/bpf/dpverif-{os.getpid()}",
                  state_dir=tmp_path / "state", local_device="br0")
    try:
        dp.apply(table())
        before = prog_id(dp)
        monkeypatch.setattr(B, "C_DIR", broken_runtime)
        with pytest.raises(VerifierError) as info:
            dp.apply(table("\n" + CONTROLLER_FLOW + "\n"))
        err = info.value
        assert [f.to_ofctl(seed_bridge().port_names) for f in err.flows] == \
            ["priority=600,udp,tp_dst=9999 actions=CONTROLLER:65535"]
        msg = str(err)
        assert "the verifier rejected the program in flow " \
               "'priority=600,udp,tp_dst=9999 actions=CONTROLLER:65535' (line 39)" in msg
        assert "(dp_controller, dp_runtime.h:" in err.where
        assert "R4" in msg.splitlines()[0]          # the verifier's reason, on the first line
        assert err.log.count("\n") > 40              # the whole log is kept
        assert prog_id(dp) == before                 # the old program still runs
    finally:
        try:
            dp.detach()  # takes the pin directories with it
        finally:
            box.close()


EVERY_ACTION = """\
priority=90,in_port=1,actions=output:2,output:3,NORMAL
priority=80,in_port=2,actions=mod_dl_src:02:00:00:00:00:99,mod_dl_dst:02:00:00:00:00:98,output:1
priority=70,in_port=3,actions=mod_vlan_vid:5,output:4,strip_vlan,output:5
priority=60,in_port=4,actions=FLOOD
priority=55,in_port=5,actions=ALL
priority=50,udp,actions=controller,output:1
priority=40,tcp,actions=IN_PORT,LOCAL
priority=30,arp,actions=resubmit(,1),goto_table:2
priority=0,actions=drop
table=1,priority=10,actions=output:3
table=2,priority=10,arp,actions=resubmit(4,1)
"""


@pytest.mark.parametrize("strategy", ["linear", "hashed"])
def test_production_build_of_every_action_passes_the_verifier(tmp_path, strategy):
    # The equivalence tests run the test build (outputs recorded, not sent):
    # the production build's action code is only verified here and in the
    # namespace tests.
    from appliance.switch.datapath.compiler import compile_table
    from appliance.kernel.libbpf import LinuxBpf
    br = seed_bridge()
    prog = compile_table(FlowTable(parse_flows(EVERY_ACTION, br.port_map)), br.port_names,
                         strategy=strategy)
    obj = LinuxBpf().load(str(B.build(prog.source, tmp_path)), ("dp_ingress",))
    obj.close()
