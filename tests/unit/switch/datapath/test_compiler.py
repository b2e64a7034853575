"""The flow-table-to-C compiler, without a kernel: determinism, errors, contract."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from appliance.kernel import bpf
from appliance.switch.bridge import seed_bridge
from appliance.switch.datapath import contract as C
from appliance.switch.datapath.compiler import STATS_SLOTS, CompileError, assign_slots, compile_table
from appliance.switch.datapath.datapath import MAPS, OUT_SIZE
from appliance.switch.flows import FlowTable
from appliance.switch.parser import parse_flows

ROOT = Path(__file__).resolve().parents[4]
SEED = ROOT / "tests" / "data" / "seed-flows.txt"
HEADER = ROOT / "appliance" / "switch" / "datapath" / "c" / "dp_contract.h"


def seed():
    br = seed_bridge()
    return br, FlowTable(parse_flows(SEED.read_text(), br.port_map))


@pytest.mark.parametrize("strategy", ["linear", "tuple", "hashed"])
def test_same_table_same_c(strategy):
    br, t = seed()
    a = compile_table(t, br.port_names, strategy=strategy)
    b = compile_table(FlowTable(list(t)), br.port_names, strategy=strategy)
    assert a.source == b.source
    assert [i.entries for i in a.tables] == [i.entries for i in b.tables]


def test_linear_code_is_in_rank_order_and_names_flows():
    br, t = seed()
    src = compile_table(t, br.port_names, strategy="linear").source
    prios = [int(p) for p in re.findall(r"/\* priority=(\d+)", src)]
    assert prios == sorted(prios, reverse=True)
    assert "actions=mod_dl_dst:d6:00:00:00:00:bf,output:vproxy */" in src


def test_hashed_tuples_put_every_flow_in_the_map():
    br, t = seed()
    prog = compile_table(t, br.port_names, strategy="hashed")
    assert sum(len(i.entries) for i in prog.tables) == len(t)


def test_resubmit_loop_is_rejected_naming_the_flow():
    br = seed_bridge()
    t = FlowTable(parse_flows("table=0,actions=resubmit(,1)\ntable=1,tcp,actions=resubmit(,0)\n",
                              br.port_map))
    with pytest.raises(CompileError) as err:
        compile_table(t, br.port_names)
    assert "tcp actions=resubmit(,0)" in str(err.value) and "loop" in str(err.value)


def test_counter_slots_survive_a_recompile():
    br, t = seed()
    first = assign_slots(t)
    smaller = FlowTable(list(t)[3:])
    again = assign_slots(smaller, first)
    assert all(again[f.key] == first[f.key] for f in smaller)


def test_contract_sizes_match_the_header():
    text = HEADER.read_text()
    defines = dict(re.findall(r"#define (DP_\w+)\s+(0x[0-9a-f]+|\d+)", text))
    assert int(defines["DP_MAX_TRACE_OUT"], 0) == C.MAX_TRACE_OUT
    assert int(defines["DP_MAX_TRACE_MATCH"], 0) == C.MAX_TRACE_MATCH
    assert int(defines["DP_EVENT_BYTES"], 0) == C.EVENT_BYTES
    assert int(defines["DP_OFPP_NORMAL"], 0) == C.OFPP_NORMAL
    assert int(defines["DP_MARK_NORMAL"].rstrip("u"), 0) == C.MARK_NORMAL
    assert C.TRACE_SIZE == 912 and C.EVENT_SIZE == 144
    assert int(defines["DP_HEALTH_REG"]) == C.HEALTH_REG
    assert int(defines["DP_HEALTH_SERVICES"]) * 8 == C.HEALTH.size
    assert int(defines["DP_PORT_HOME"]) == C.PORT_HOME
    assert int(defines["DP_MAX_MACS"]) == C.MAX_MACS
    assert int(defines["DP_PORT_DNS"]) == C.PORT_DNS
    assert int(defines["DP_PORT_SKB_COUNT"]) == C.PORT_SKB_COUNT
    assert int(re.search(r"DP_MISC_PAUSE_DROPS = (\d+)", text).group(1)) == C.MISC_PAUSE_DROPS
    mac_fields = re.search(r"struct dp_mac_stats \{(.*?)\};", text, re.S).group(1)
    assert len(re.findall(r"__u64 \w+;", mac_fields)) * 8 == C.MAC_STATS.size


def test_the_datapaths_map_specs_match_the_runtime_header():
    # What the kernel's fake is told about the runtime's maps (it cannot read the ELF).
    text = (HEADER.parent / "dp_runtime.h").read_text()
    kinds = {"HASH": bpf.HASH, "ARRAY": bpf.ARRAY, "PERCPU_ARRAY": bpf.PERCPU_ARRAY, "RINGBUF": bpf.RINGBUF,
             "LRU_PERCPU_HASH": bpf.LRU_PERCPU_HASH}
    sizes = {"__u32": 4, "__u64": 8, "struct dp_port": C.PORT.size, "struct dp_flood_slot": C.FLOOD_SLOT.size,
             "struct dp_stats": C.STATS.size, "struct dp_trace": C.TRACE_SIZE,
             "struct dp_health": C.HEALTH.size, "struct dp_mac_stats": C.MAC_STATS.size,
             "struct dp_out": OUT_SIZE}
    out = re.search(r"struct dp_out \{(.*?)\};", text, re.S).group(1)
    u32, u8 = re.findall(r"__u32 \w+(?:\[(\d+)\])?;", out), re.findall(r"__u8 \w+(?:\[(\d+)\])?;", out)
    assert 4 * sum(int(n or 1) for n in u32) + sum(int(n or 1) for n in u8) == OUT_SIZE
    names = {"DP_MAX_PORTS": C.MAX_PORTS, "DP_STATS_SLOTS": STATS_SLOTS, "DP_MISC_MAX": C.MISC_MAX,
             "DP_MAX_MACS": C.MAX_MACS, "DP_MAX_PAUSED": C.MAX_PAUSED}
    found = {}
    for body, name in re.findall(r"struct \{\n(.*?)\} (\w+) SEC\(\"\.maps\"\);", text, re.S):
        fields = dict(re.findall(r"__(?:uint|type)\((\w+), ([^)]+)\);", body))
        entries = fields["max_entries"]
        found[name] = bpf.MapSpec(kinds[fields["type"].removeprefix("BPF_MAP_TYPE_")],
                                  sizes.get(fields.get("key"), 0), sizes.get(fields.get("value"), 0),
                                  names.get(entries) or math.prod(int(n) for n in entries.split("*")))
    assert found == MAPS
