"""`appctl ofproto/trace --datapath`: the compiled program's decision beside the reference's."""
import io

from appliance.switch import cli

SEED = "tests/data/seed-flows.txt"
PORTS = {"uplink": 1, "downlink": 2, "admin": 3, "vgw": 4, "vproxy": 5}


def run(fn, *argv, state):
    out = io.StringIO()
    code = fn(list(argv), out=out, state_dir=state)
    return code, out.getvalue()


def test_trace_with_datapath_shows_both_decisions_and_that_they_agree(tmp_path):
    run(cli.run_vsctl, "add-br", "br0", state=tmp_path)
    for name, number in PORTS.items():
        run(cli.run_vsctl, "add-port", "br0", name, f"ofport_request={number}", state=tmp_path)
    run(cli.run_ofctl, "add-flows", "br0", SEED, state=tmp_path)
    code, text = run(cli.run_appctl, "ofproto/trace", "br0",
                     "in_port=downlink,udp,dl_src=02:00:00:00:10:01,nw_src=192.168.1.20,"
                     "nw_dst=192.168.1.1,udp_dst=53", "--datapath", state=tmp_path)
    assert code == 0
    reference, _, datapath = text.partition("Compiled datapath")
    assert "OpenFlow outputs: vproxy(5)" in reference
    assert "outputs: vproxy(dl_src=02:00:00:00:10:01,dl_dst=d6:00:00:00:00:bf)" in datapath
    assert "agrees with the reference classifier" in datapath


def test_trace_with_datapath_says_how_many_outputs_it_left_out(tmp_path, tmp_path_factory):
    """A broadcast flooded 35 times: the test build records 32 outputs; the trace says there
    were 3 more and still agrees (it used to list 32 and say nothing of the rest)."""
    flows = tmp_path_factory.mktemp("flows") / "flood.txt"
    flows.write_text("priority=0 actions=FLOOD,FLOOD,ALL,goto_table:1\n"
                     "table=1, priority=0 actions=FLOOD,FLOOD,ALL,output:uplink,goto_table:2\n"
                     "table=2, priority=0 actions=ALL\n")
    run(cli.run_vsctl, "add-br", "br0", state=tmp_path)
    for name, number in PORTS.items():
        run(cli.run_vsctl, "add-port", "br0", name, f"ofport_request={number}", state=tmp_path)
    run(cli.run_ofctl, "add-flows", "br0", str(flows), state=tmp_path)
    code, text = run(cli.run_appctl, "ofproto/trace", "br0",
                     "in_port=uplink,udp,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=192.168.1.20,nw_dst=192.168.1.1",
                     "--datapath", state=tmp_path)
    assert code == 0, text
    _, _, datapath = text.partition("Compiled datapath")
    assert ", and 3 more (the test build records the first 32)" in datapath, datapath
    assert "agrees with the reference classifier" in datapath, datapath
