"""Lint, bridges as data, and the vsctl/ofctl/appctl commands."""
import io
import json

import pytest

from appliance.switch import cli
from appliance.switch.bridge import Bridge, BridgeError, BridgeStore, seed_bridge
from appliance.switch.lint import lint
from appliance.switch.parser import parse_flows

SEED = "tests/data/seed-flows.txt"


def seed_findings():
    br = seed_bridge()
    with open(SEED) as fh:
        flows = parse_flows(fh.read(), br.port_map)
    return br, lint(flows, br)


def test_lint_finds_the_seeds_dhcp_overlaps_from_the_uplink():
    br, findings = seed_findings()
    overlaps = [(f.flow.line, f.other.line) for f in findings if f.code == "overlap"]
    # "dhcp req go to vgw" (line 20) vs "forbid dhcp from uplink" (line 25),
    # "dhcp resp go to downlink" (line 22) vs line 24.
    assert (20, 25) in overlaps
    assert (22, 24) in overlaps
    msg = next(f.message for f in findings if (f.flow.line, f.other.line) == (20, 25))
    assert "undefined" in msg
    assert not [f for f in findings if f.severity == "error"]


def test_lint_shadowed_ports_in_port_output_and_normalised():
    br = Bridge("br0", {"a": 1, "b": 2})
    flows = parse_flows(
        "priority=10,udp,actions=output:1\n"
        "priority=5,udp,tp_dst=53,actions=output:2\n"      # shadowed by the first
        "priority=5,in_port=1,actions=output:1\n"           # always skipped
        "priority=5,ip,actions=output:9,resubmit(,4)\n"     # no port 9, empty table 4
        "priority=1,ip,nw_dst=10.1.1.1/8,actions=drop\n", br.port_map)
    codes = {(f.code, f.flow.line) for f in lint(flows, br)}
    assert ("shadowed", 2) in codes
    assert ("output-to-in-port", 3) in codes
    assert ("no-such-port", 4) in codes
    assert ("empty-table", 4) in codes
    assert ("normalised", 5) in codes
    assert lint(flows, br)[0].severity == "error"


def test_bridge_store_persists_and_validates(tmp_path):
    store = BridgeStore(tmp_path)
    store.add_br("br0")
    assert store.add_port("br0", "uplink", 7) == 7
    assert store.add_port("br0", "downlink") == 1
    with pytest.raises(BridgeError, match="already port uplink"):
        store.add_port("br0", "x", 7)
    with pytest.raises(BridgeError, match="collides with the reserved port LOCAL"):
        store.add_port("br0", "local")
    with pytest.raises(BridgeError, match="all digits"):
        store.add_port("br0", "12")
    store.get("br0").flows.extend(parse_flows("in_port=uplink,actions=output:downlink", store.get("br0").port_map))
    store.save()
    again = BridgeStore(tmp_path)
    assert again.get("br0").ports == {"uplink": 7, "downlink": 1}
    assert [str(f) for f in again.get("br0").flows] == ["in_port=7 actions=output:1"]
    data = json.loads((tmp_path / "switch" / "bridges.json").read_text())
    assert data["bridges"]["br0"]["flows"] == ["in_port=uplink actions=output:downlink"]


def run(fn, *argv, state, stdin=None):
    out = io.StringIO()
    kw = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    code = fn(list(argv), out=out, state_dir=state, **kw)
    return code, out.getvalue()


def test_cli_end_to_end(tmp_path):
    s = tmp_path
    run(cli.run_vsctl, "add-br", "br0", state=s)
    for i, p in enumerate(("uplink", "downlink", "admin", "vgw"), start=1):
        run(cli.run_vsctl, "add-port", "br0", p, "--", "set", "Interface", p, f"ofport_request={i}", state=s)
    run(cli.run_vsctl, "add-port", "br0", "vproxy", "ofport_request=5", state=s)
    assert run(cli.run_vsctl, "list-ports", "br0", state=s)[1].split() == ["admin", "downlink", "uplink", "vgw", "vproxy"]
    run(cli.run_ofctl, "add-flows", "br0", SEED, state=s)
    code, dump = run(cli.run_ofctl, "dump-flows", "br0", state=s)
    assert dump.count("\n") == 15
    assert " priority=499,udp,nw_dst=192.168.1.1,tp_dst=53 actions=mod_dl_dst:d6:00:00:00:00:bf,output:vproxy\n" in dump
    code, text = run(cli.run_appctl, "ofproto/trace", "br0",
                     "in_port=downlink,udp,nw_dst=192.168.1.1,udp_dst=53", state=s)
    assert " 0. udp,nw_dst=192.168.1.1,tp_dst=53, priority 499" in text
    assert "OpenFlow outputs: vproxy(5)" in text
    # del-flows non-strict removes every flow the match covers.
    run(cli.run_ofctl, "del-flows", "br0", "udp", state=s)
    assert "udp" not in run(cli.run_ofctl, "dump-flows", "br0", state=s)[1]
    run(cli.run_ofctl, "del-flows", "br0", "--strict", "priority=0", state=s)
    assert "NORMAL" not in run(cli.run_ofctl, "dump-flows", "br0", state=s)[1]
    code, text = run(cli.run_ofctl, "lint", "br0", state=s)
    assert code == 0


def test_cli_bad_flow_file_changes_nothing(tmp_path):
    s = tmp_path
    run(cli.run_vsctl, "add-br", "br0", state=s)
    run(cli.run_ofctl, "add-flow", "br0", "priority=1,actions=drop", state=s)
    before = (s / "switch" / "bridges.json").read_text()
    with pytest.raises(cli.CliError) as e:
        run(cli.run_ofctl, "add-flows", "br0", "-", state=s,
            stdin="priority=2,udp,actions=drop\npriority=3,nw_src=1.1.1.1,actions=drop\n")
    assert "-:line 2, column 12: nw_src needs" in str(e.value)
    assert "nothing was changed" in str(e.value)
    assert (s / "switch" / "bridges.json").read_text() == before
    with pytest.raises(cli.CliError, match="no bridge named br9"):
        run(cli.run_ofctl, "dump-flows", "br9", state=s)


def test_django_commands_are_thin_wrappers(tmp_path, settings):
    from django.core.management import CommandError, call_command
    settings.STATE_DIR = tmp_path
    call_command("vsctl", "add-br", "br0")
    call_command("vsctl", "add-port", "br0", "p1", "ofport_request=1")
    call_command("ofctl", "add-flow", "br0", "in_port=p1,actions=NORMAL")
    out = io.StringIO()
    call_command("ofctl", "dump-flows", "br0", stdout=out)
    assert out.getvalue() == " in_port=p1 actions=NORMAL\n"
    with pytest.raises(CommandError, match="unknown port"):
        call_command("ofctl", "add-flow", "br0", "in_port=p2,actions=NORMAL")
