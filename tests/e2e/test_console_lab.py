"""The console managing a real box in the lab, in a real browser (issue 8's "against the demo").

The lab is up and the box applied in its box namespace (tests/support/boxlab.py);
the console stack runs on this machine with APPLIANCE_HOST_NETNS,
APPLIANCE_BOX_STATE and APPLIANCE_BOX_RUN naming that box, as `make demo`
does (appliance/lab/demo.py). In the browser: change the DHCP pool, apply,
watch the progress arrive live; then a lab client's dhclient gets an address
from the new pool and its lease shows up in the open lease table without a
reload.
"""
import ipaddress
import re

import pytest

from appliance.lab import topology
from tests.support.boxlab import box_in_lab, settings_data
from tests.support.console import apply_and_watch, first_admin, lab_stack, lines_of, wait_state

NEW_POOL = ("192.168.1.120", "192.168.1.139")  # apart from the old .20-.99 and the modem's .100-.200


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with box_in_lab(tmp_path_factory.mktemp("consolelab"), "k", clients=2, apply=settings_data()) as lab_box:
        yield lab_box


@pytest.fixture(scope="module")
def stack(home):
    with lab_stack(*home) as s:
        yield s


def in_pool(ip, pool):
    return ipaddress.ip_address(pool[0]) <= ipaddress.ip_address(ip) <= ipaddress.ip_address(pool[1])


# `home` first: the lab (pyroute2's asyncio) must be up before Playwright's sync API runs its loop in
# this thread, and is torn down after the browser has closed.
def test_pool_change_applied_in_the_lab_and_the_new_lease_appears_live(home, stack, page, shot):
    lab, box = home
    first_admin(page, stack)

    # The console starts from what the box runs.
    page.goto("/dhcp/")
    assert "192.168.1.20" in page.locator("#pools").inner_text()
    page.click("#pools a:has-text('edit')")
    page.fill("#id_start", NEW_POOL[0])
    page.fill("#id_end", NEW_POOL[1])
    page.click("form.section-form button")
    page.wait_for_url("**/dhcp/")

    frames = apply_and_watch(page)
    assert wait_state(page, ["applied", "failed"], timeout=60000) == "applied", \
        page.locator("#apply-log").inner_text()
    page.wait_for_function("document.getElementById('apply-log').textContent.includes('done:')")
    lines = lines_of(frames)
    assert any(x.startswith("done:") for x in lines), lines  # said after the page was open: live
    assert any("dhcp4" in x for x in lines), lines
    shot(page, "lab-apply")
    pool = box.applied_settings().dhcp.pools[0]
    assert (str(pool.start), str(pool.end)) == NEW_POOL

    # The lease table is open before the client asks; the lease must come to it.
    page.goto("/dhcp/")
    page.wait_for_selector("#lease-table table#leases, #lease-table p.warn")
    mac = topology.client_mac(1)
    assert mac not in page.locator("#lease-table").inner_text()
    lease = lab.dhcp(lab.spec.client(1))
    assert in_pool(lease.address, NEW_POOL), lease
    assert lease.server_identifier == "192.168.1.1"
    row = page.locator("#leases tr", has_text=mac)
    row.wait_for(timeout=15000)
    assert lease.address in row.inner_text()
    assert row.locator("a:has-text('make static')").count() == 1
    assert re.search(r"/dhcp/", page.url)  # no navigation happened: the table came over htmx
    shot(page, "lab-dhcp")
