"""What the browser tests share: the admin's password and how to watch an apply on the console."""
import json
import re

PASSWORD = "a long passphrase for e2e"


def wait_state(page, states, timeout=30000):
    page.wait_for_function(
        "states => states.includes(document.getElementById('apply-state').textContent.trim())",
        arg=list(states), timeout=timeout)
    return page.locator("#apply-state").inner_text().strip()


def apply_and_watch(page):
    """Click Apply; collect the progress lines that arrive over the websocket."""
    frames = []

    def on_ws(ws):
        ws.on("framereceived", lambda data: frames.append(data))
    page.on("websocket", on_ws)
    page.goto("/applies/")
    page.click("#apply-button")
    page.wait_for_url(re.compile(r"/applies/\d+/$"))
    return frames


def lines_of(frames):
    out = []
    for f in frames:
        ev = json.loads(f if isinstance(f, str) else f.decode())
        if ev.get("kind") == "apply" and ev.get("line"):
            out.append(ev["line"])
    return out
