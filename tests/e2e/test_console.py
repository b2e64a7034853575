"""The console in a real browser against uvicorn workers + Celery + Redis, the Box on persistent fakes.

Run in order (module-scoped browser and stack): first run, login, wizard,
apply with live progress, a DHCP pool change, a lease appearing without a
reload, a confirm-required change that rolls back when not confirmed and
one the console confirms by itself, a screenshot of every page, and the
Celery worker killed in the middle of an apply.
"""
import dataclasses
import json
import pickle
import time

from tests.support.console import PASSWORD, apply_and_watch, lines_of, wait_state


def test_first_run_creates_the_admin_then_login(page, stack, shot):
    page.goto("/")
    assert page.url.endswith("/setup/")
    page.fill("#id_code", stack.setup_code)  # as `make demo` prints it
    shot(page, "setup")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("#setup-form button")
    page.wait_for_url("**/network/wizard/")
    shot(page, "wizard")
    page.select_option("#id_uplink", "enp5s0")
    page.select_option("#id_downlink", "enp1s0")
    page.fill("#id_gateway_ip", "192.168.1.1")
    page.fill("#id_lan_prefix", "192.168.1.0/24")
    page.click("main form button")
    page.wait_for_url("**/network/")
    assert "enp5s0" in page.content()
    # Log out and in again.
    page.click("header .who button")
    page.wait_for_url("**/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "wrong")
    page.click("#login-form button")
    assert "Wrong user name or password" in page.content()
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("#login-form button")
    page.wait_for_url(stack.url + "/")
    assert page.locator("#tile-leases").is_visible()


def test_first_apply_streams_its_progress_live(page, shot):
    frames = apply_and_watch(page)
    assert wait_state(page, ["applied", "failed"]) == "applied"
    page.wait_for_function("document.getElementById('apply-log').textContent.includes('done:')")
    # The last lines came over the websocket (the page was open before they were said) ...
    lines = lines_of(frames)
    assert any(x.startswith("done:") for x in lines), lines
    # ... and the page's log is whole, from the first step on, without a reload.
    log = page.locator("#apply-log").inner_text()
    assert log.startswith("step 1/5") and "step 4/5: services" in log, log
    shot(page, "apply-detail")


def test_change_the_dhcp_pool_and_apply(page, stack, shot):
    page.goto("/dhcp/")
    page.click("#pools a:has-text('edit')")
    page.fill("#id_start", "192.168.1.2")
    page.click("form.section-form button")
    assert "contains the admin address 192.168.1.8" in page.content(), "the document's own words"
    page.fill("#id_start", "192.168.1.100")
    page.click("form.section-form button")
    page.wait_for_url("**/dhcp/")
    assert "192.168.1.100" in page.locator("#pools").inner_text()
    frames = apply_and_watch(page)
    assert wait_state(page, ["applied", "failed"]) == "applied"
    assert any("dhcp4: restarted" in x for x in lines_of(frames))
    applied = json.loads((stack.tmp / "box" / "state" / "applied.json").read_text())
    assert applied["settings"]["dhcp"]["pools"][0]["start"] == "192.168.1.100"


def test_a_new_lease_appears_without_reload(page, stack, shot):
    page.goto("/dhcp/")
    page.wait_for_selector("#leases")
    assert "02:00:00:00:0e:2e" not in page.content()
    (stack.tmp / "box" / "leases.json").write_text(json.dumps([
        {"ip": "192.168.1.100", "mac": "02:00:00:00:0e:2e", "hostname": "client1", "expires": 2000000000,
         "state": 0}]))
    page.wait_for_selector("#leases >> text=02:00:00:00:0e:2e", timeout=15000)
    assert page.locator("#leases a:has-text('make static')").count() == 1
    shot(page, "dhcp")


def wait_record(page, pk, states, timeout=30):
    """Poll the API until apply #pk is in one of `states`; returns the record."""
    deadline = time.monotonic() + timeout
    while True:
        rec = page.request.get(f"/api/applies/{pk}/").json()
        if rec["state"] in states or time.monotonic() > deadline:
            return rec
        time.sleep(0.2)


def change_admin_address(page, address):
    page.goto("/network/admin/")
    page.fill("#id_address", address)
    page.click("form.section-form button")
    page.wait_for_url("**/network/")


def test_unconfirmed_change_rolls_back(page, stack, shot):
    change_admin_address(page, "192.168.1.7")
    # The console cannot reach the box any more: its confirm requests fail.
    page.route("**/confirm/", lambda route: route.abort())
    try:
        apply_and_watch(page)
        assert wait_state(page, ["awaiting_confirm", "failed"]) == "awaiting_confirm"
        page.wait_for_selector("#confirm-box:not([hidden])")
        page.wait_for_function("Number(document.getElementById('countdown').textContent) > 0")
        shot(page, "confirm-countdown")
        assert wait_state(page, ["rolled_back"], timeout=40000) == "rolled_back"
        pk = page.locator("#apply-state").get_attribute("data-apply")
    finally:
        page.unroute("**/confirm/")
    rec = page.request.get(f"/api/applies/{pk}/").json()
    assert rec["outcome"] == "old" and "not confirmed in time" in rec["log"]
    assert wait_record(page, rec["rolled_back_by"], ["applied", "failed"])["state"] == "applied"
    applied = json.loads((stack.tmp / "box" / "state" / "applied.json").read_text())
    assert applied["settings"]["admin"]["address"] == "192.168.1.8"
    page.goto("/network/")
    assert "address=192.168.1.8" in page.content(), "the console's settings follow the box back"


def test_console_confirms_by_itself_when_it_can_reach_the_box(page, stack):
    change_admin_address(page, "192.168.1.7")
    apply_and_watch(page)
    assert wait_state(page, ["confirmed", "rolled_back", "failed"], timeout=40000) == "confirmed"
    applied = json.loads((stack.tmp / "box" / "state" / "applied.json").read_text())
    assert applied["settings"]["admin"]["address"] == "192.168.1.7"


def test_screenshots_of_every_page(page, shot):
    for name, url in [("dashboard", "/"), ("network", "/network/"), ("dns", "/dns/"), ("applies", "/applies/"),
                      ("audit", "/audit/"), ("system", "/system/"), ("account", "/account/"),
                      ("custom-flows", "/switch/custom/")]:
        page.goto(url)
        page.wait_for_load_state("networkidle")
        if name == "dashboard":
            page.wait_for_selector("#port-charts .chart[data-points]", timeout=15000)
        if name == "custom-flows":
            page.fill("#id_custom", "priority=10,udp,tp_dst=99999,actions=drop")
            page.wait_for_selector("#lint-findings li.error", timeout=10000)
        shot(page, name)
    page.goto("/switch/")
    page.wait_for_selector(".flows")
    page.click("main form button")
    page.wait_for_selector("#trace-result pre")
    assert "OpenFlow outputs" in page.locator("#trace-result").inner_text()
    shot(page, "switch")
    page.goto("/audit/")
    body = page.content()
    for action in ("setup", "wizard", "update", "apply", "confirm"):
        assert f">{action}<" in body, action


def test_the_charts_draw_the_boxs_series_and_follow_them_without_a_reload(page, stack, shot):
    from appliance.services.timeseries import Series

    # What the box's DNS server writes (its series file in the box's state), two minutes ago.
    store = Series(str(stack.tmp / "box" / "state" / "series" / "dns.sqlite"))
    try:
        store.add({"dns.queries": 30, "dns.blocked": 6, "dns.forwarded": 24}, now=time.time() - 120)
        page.goto("/stats/")
        page.wait_for_selector("#chart-dns canvas")
        page.wait_for_selector("#chart-blocked-share canvas")
        total = "document.getElementById('chart-dns').dataset.total || ''"
        page.wait_for_function(f"({total}).startsWith('30,6,24,')")
        assert "20%" in page.locator("#dns-totals").inner_text()
        # A new minute's answers come to the open page (it polls every 10 s).
        store.add({"dns.queries": 12}, now=time.time())
        page.wait_for_function(f"({total}).startsWith('42,')", timeout=25000)
    finally:
        store.close()
    shot(page, "charts")


def fake_state(stack):
    with open(stack.tmp / "box" / "fakes.pickle", "rb") as f:
        kernel, switch, services, fs = pickle.load(f)
    # ifindex left out: a link made again gets a new one, on a real box too.
    return ({n: ({k: dataclasses.replace(v, ifindex=0) for k, v in ns.links.items()},
                 {d: set(a) for d, a in ns.addrs.items()}, sorted(map(str, ns.routes)), dict(ns.nft))
             for n, ns in kernel.ns.items()}, switch.loaded, dict(services.running), dict(fs.files))


def test_worker_killed_during_an_apply_leaves_the_old_state(page, stack):
    before_state = fake_state(stack)
    before_applied = (stack.tmp / "box" / "state" / "applied.json").read_text()
    change_admin_address(page, "192.168.1.6")  # changes kernel objects at step 1
    page.route("**/confirm/", lambda route: route.abort())
    try:
        apply_and_watch(page)
        page.wait_for_function("document.getElementById('apply-log').textContent.includes('step 2/5')")
        stack.kill("celery")
        pk = page.locator("#apply-state").get_attribute("data-apply")
        assert fake_state(stack) != before_state, "the kill left a half-applied box"
        stack.start_worker()  # its startup check repairs the box
        page.reload()
        assert wait_state(page, ["interrupted"], timeout=30000) == "interrupted"
    finally:
        page.unroute("**/confirm/")
    rec = page.request.get(f"/api/applies/{pk}/").json()
    assert rec["outcome"] == "old" and "restored: the box runs the previous settings" in rec["log"]
    assert (stack.tmp / "box" / "state" / "applied.json").read_text() == before_applied
    after = fake_state(stack)
    for ns in set(after[0]) | set(before_state[0]):
        for i, what in enumerate(("links", "addresses", "routes", "nftables")):
            a, b = after[0].get(ns, [None] * 4)[i], before_state[0].get(ns, [None] * 4)[i]
            assert a == b, (ns, what, a, b)
    for i, what in enumerate(("kernel", "switch", "services", "files")):
        assert after[i] == before_state[i], what
    assert "the previous settings" in page.content()
