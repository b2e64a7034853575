"""Browser tests: Playwright drives Debian's Chromium (never a downloaded browser) against the stack."""
import os
import shutil
from pathlib import Path

import pytest

from tests.support.stack import ROOT, Stack

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def stack():
    if not shutil.which("redis-server") or not os.path.exists(CHROMIUM):
        pytest.skip("needs redis-server and /usr/bin/chromium (image/packages.txt)")
    s = Stack(confirm_timeout=8, step_delay=0.5).start()
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser, stack):
    # bypass_csp: Playwright evaluates its wait predicates with eval; the pages themselves never do.
    ctx = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900}, bypass_csp=True)
    pg = ctx.new_page()
    pg.set_default_timeout(20000)
    yield pg
    ctx.close()


@pytest.fixture(scope="session")
def shot():
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page, name):
        page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)
    return take


def pytest_configure(config):
    Path(ARTIFACTS).mkdir(exist_ok=True)
