"""Property tests: the parser never crashes; print/parse round-trips; the
tuple-space classifier equals a linear scan."""
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.switch import parser
from appliance.switch.classifier import classify
from appliance.switch.parser import FlowSyntaxError, parse_flow, parse_flows
from tests.support import flowgen

ALPHABET = st.sampled_from(list("=,:/()->. \t\n\\#0123456789abcdefx") +
                           ["ip", "udp", "arp", "tcp6", "nw_src", "tp_dst", "in_port", "actions",
                            "output", "drop", "priority", "dl_vlan", "resubmit", "goto_table",
                            "set_field", "ff:ff:ff:ff:ff:ff", "10.0.0.1", "::1", "NORMAL", "table"])


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_parser_never_crashes_on_token_soup(text):
    try:
        parse_flows(text)
    except FlowSyntaxError as e:
        assert e.line >= 1 and e.column >= 1 and e.message


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_parser_never_crashes_on_arbitrary_text(text):
    try:
        parse_flow(text)
    except FlowSyntaxError:
        pass


@settings(max_examples=300, deadline=None)
@given(flowgen.flows())
def test_print_parse_round_trip(flow):
    text = flow.to_ofctl()
    again = parse_flow(text)
    assert again == flow
    assert again.to_ofctl() == text


@settings(max_examples=60, deadline=None)
@given(flowgen.flow_tables(max_size=40), st.integers(0, 2**32 - 1))
def test_classifier_equals_linear_scan(table, seed):
    for p in flowgen.packets_for(table, random.Random(seed), 30):
        got = classify(table, p).lookups[0].flow
        best = None
        for f in table:  # insertion order: strict > keeps the first of a tie
            if f.table == 0 and f.match.matches(p.fields) and (best is None or f.priority > best.priority):
                best = f
        assert got is best
