"""The devices page in a real browser, on the console managing the real box in the lab (issue 18's
"Shown").

The lab is up, the box applied with a fake-IP name (www.proxied.test, relayed direct, so the relay
hands its later connections to the kernel fast path); two clients hold leases from the box. In
Chromium: the devices page lists both clients with their vendor ("private address": the lab's MACs
are locally administered), addresses and the name the user gives; after client 1 downloads 20 MB
over the fast path, its "received" bytes on the page move by its own interface's count
(`ip -s link`) within 1%, within 5 s; its Pause button makes its curl fail while client 2's works,
and Resume gives it the internet back. A schedule set on the device's schedule page (every day,
the whole day) switches client 1 off within 2 s (no internet, every name blocked by the box's DNS,
"off by its schedule" on the page) and clearing it brings it back; a MAC the box never saw shows
on the audit log as a new device.
"""
import json
import re
import subprocess
import time

import pytest

from appliance.box.settings import parse_settings
from appliance.durable import write_atomic
from appliance.lab import topology
from tests.e2e.test_devices_lab import NEW_MAC, curl_ok, dig_status, wait_until
from tests.support.boxlab import box_in_lab, settings_data
from tests.support.console import first_admin, lab_stack

DNS = {"upstreams": [{"url": "udp://192.168.1.1"}],
       "rules": [{"match": "suffix", "value": "proxied.test", "then": {"action": "fake-ip", "route": "direct"}}]}
SIZE = 20_000_000


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with box_in_lab(tmp_path_factory.mktemp("devicesconsole"), "y", clients=2) as (lab, box):
        # A box that has run a while and knows its two clients (a new box learns the devices
        # already there for an hour, silently): a third MAC is news.
        write_atomic(box.layout.devices_state, json.dumps(
            {"known": {topology.client_mac(i): 0 for i in (1, 2)}, "learn_left": 0}))
        res = box.apply(parse_settings(settings_data(dns=DNS)))
        assert res.ok, res.error
        for c in lab.spec.client_names:
            lab.dhcp(c)
        yield lab, box


@pytest.fixture(scope="module")
def stack(home):
    with lab_stack(*home) as s:
        yield s


def interface_rx_bytes(lab, client) -> int:
    """What the client's own interface received, as `ip -s link` counts it."""
    out = lab.run(client, ["ip", "-j", "-s", "link", "show", "dev", "eth0"], check=True).stdout
    return json.loads(out)[0]["stats64"]["rx"]["bytes"]


def row(page, mac):
    return page.locator(f'#devices tr[data-mac="{mac}"]')


def page_rx_bytes(page, mac) -> int | None:
    """The exact count the page gives for what the device received (the cell's title)."""
    cell = row(page, mac).locator("td.rx span.bytes")
    if cell.count() == 0:
        return None
    return int(re.sub(r"\D", "", cell.get_attribute("title")))


def reloaded_rx_bytes(page, mac) -> int | None:
    page.goto("/devices/")
    return page_rx_bytes(page, mac)


# `home` first: the lab (pyroute2's asyncio) must be up before Playwright's sync API runs its loop.
def test_the_devices_page_counts_pauses_and_resumes_the_labs_clients(home, stack, page, shot):
    from appliance.services.relay.control import query

    lab, box = home
    one, two = lab.spec.client(1), lab.spec.client(2)
    mac1, mac2 = topology.client_mac(1), topology.client_mac(2)
    first_admin(page, stack)

    wait_until(lambda: curl_ok(lab, one) and curl_ok(lab, two), 20, "the clients cannot reach the lab's internet")
    page.goto("/devices/")
    leases = {mac1: lab.dhcp(one).address, mac2: lab.dhcp(two).address}
    for mac, address in leases.items():
        text = wait_until(lambda mac=mac: row(page, mac).count() and row(page, mac).inner_text(), 5,
                          f"{mac} not on the devices page")
        assert address in text and "private address" in text and "online" in text, text

    # A name from the user.
    row(page, mac1).locator("a:has-text('rename')").click()
    page.fill("#id_name", "Kids' tablet")
    page.click("form.section-form button")
    page.wait_for_url("**/devices/")
    assert "Kids' tablet" in row(page, mac1).inner_text()

    # 20 MB through the kernel fast path: the relay hands the name's later connections to the kernel.
    sock = f"{box.layout.run_dir}/relay.sock"
    lab.run(one, ["curl", "-4", "-s", "-m", "10", "-o", "/dev/null", "http://www.proxied.test/"])
    wait_until(lambda: query(sock, "stats")["fast_path"]["entries"] >= 1, 10,
               "the relay never handed www.proxied.test to the kernel")
    relayed = query(sock, "stats")["totals"]["accepted"]
    shown_before = page_rx_bytes(page, mac1)
    assert shown_before is not None, "no counters on the page: the datapath did not count client 1"
    own_before = interface_rx_bytes(lab, one)
    got = lab.run(one, ["curl", "-4", "-s", "-m", "60", "-o", "/dev/null", "-w", "%{size_download}",
                        f"http://www.proxied.test/bytes/{SIZE}"]).stdout
    assert got == str(SIZE)
    own = interface_rx_bytes(lab, one) - own_before
    assert query(sock, "stats")["totals"]["accepted"] == relayed, "the download went through the relay"
    done = time.monotonic()
    shown = wait_until(lambda: (n := reloaded_rx_bytes(page, mac1)) is not None and n - shown_before >= 0.99 * own
                       and n - shown_before, 5, "the page did not show the 20 MB within 5 s")
    print(f"\n20 MB over the fast path: page +{shown} bytes, client's interface +{own} bytes, "
          f"shown {time.monotonic() - done:.2f} s after the download")
    assert time.monotonic() - done < 5
    assert abs(shown - own) <= 0.01 * own, f"page {shown} bytes, the client's interface {own}"
    shot(page, "lab-devices")

    # Pause from the page: client 1 is cut off at once, client 2 is not; Resume restores it.
    row(page, mac1).locator("button:has-text('Pause')").click()
    page.wait_for_url("**/devices/")
    assert "paused" in row(page, mac1).inner_text()
    assert not curl_ok(lab, one)
    assert curl_ok(lab, two)
    row(page, mac1).locator("button:has-text('Resume')").click()
    page.wait_for_url("**/devices/")
    wait_until(lambda: curl_ok(lab, one), 10, "client 1 did not get the internet back after Resume")
    assert "paused" not in row(page, mac1).locator("td").first.inner_text()


def off_by_schedule(page, mac) -> bool:
    page.goto("/devices/")
    return "off by its schedule" in row(page, mac).inner_text()


def test_a_schedule_from_the_browser_switches_a_client_off_and_a_new_device_is_on_the_audit_log(
        home, stack, page, shot):
    lab, box = home
    one, two = lab.spec.client(1), lab.spec.client(2)
    mac1 = topology.client_mac(1)
    wait_until(lambda: curl_ok(lab, one) and curl_ok(lab, two), 20, "the clients cannot reach the lab's internet")

    # Every day, the whole day (an end equal to the start): off from the next tick.
    page.goto("/devices/")
    row(page, mac1).locator("a:has-text('schedule')").click()
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        page.check(f'input[name="days"][value="{day}"]')
    page.fill("#id_start", "00:00")
    page.fill("#id_end", "00:00")
    page.click("form.section-form button")
    page.wait_for_url("**/devices/")
    saved = time.monotonic()
    try:
        wait_until(lambda: dig_status(lab, one) == "NXDOMAIN", 10, "client 1's names were not blocked")
        took = time.monotonic() - saved
        print(f"\nschedule from the browser: client 1's names blocked {took:.2f} s after Save")
        assert took <= 2.0
        assert not curl_ok(lab, one)
        assert curl_ok(lab, two) and dig_status(lab, two) == "NOERROR"
        wait_until(lambda: off_by_schedule(page, mac1), 5, "the page does not say client 1 is off by its schedule")
        shot(page, "lab-devices-schedule")
    finally:
        page.goto("/devices/")
        row(page, mac1).locator("a:has-text('schedule')").click()
        for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
            page.uncheck(f'input[name="days"][value="{day}"]')
        page.click("form.section-form button")
        page.wait_for_url("**/devices/")
    wait_until(lambda: curl_ok(lab, one), 10, "client 1 did not get the internet back when its schedule went")
    wait_until(lambda: dig_status(lab, one) == "NOERROR", 10, "client 1's names stayed blocked")
    assert not off_by_schedule(page, mac1)

    # A device the box never saw: client 2 takes a new MAC and sends a frame.
    subprocess.run(["ip", "-n", two, "link", "set", "eth0", "address", NEW_MAC], check=True)
    try:
        lab.run(two, ["ping", "-c", "1", "-W", "1", "192.168.1.1"])

        def on_audit_log() -> bool:
            page.goto("/audit/?q=new")
            # The MAC is in the entry's detail (a closed <details>): its text, not what is drawn.
            return any(NEW_MAC in text for text in page.locator("#audit tbody tr").all_text_contents())
        wait_until(on_audit_log, 15, "the new device never showed on the audit log")
        text = next(t for t in page.locator("#audit tbody tr").all_text_contents() if NEW_MAC in t)
        assert "devices: new" in text, text
        shot(page, "lab-audit-new-device")
    finally:
        subprocess.run(["ip", "-n", two, "link", "set", "eth0", "address", topology.client_mac(2)], check=True)
