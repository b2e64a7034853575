"""Writes adguard-wildcards.json: which names AdGuard's own matcher blocks for AdBlock masks with `*`.

The oracle of tests/unit/services/dns/test_adblock_wildcards.py. AdGuard
Home's DNS filter is Go (github.com/AdguardTeam/urlfilter); only its
TypeScript twin, @adguard/tsurlfilter, runs here (npm fetches it into a
temporary folder). The twin's `NetworkRule.match` is asked what the Go
engine asks for a DNS name: a request for "http://<name>" marked as a
host-name request (urlfilter's `NewRequestForHostname`). The twin's own
DnsEngine is not used: it adds a "/" to that URL, so a `||...|` rule
never matches there, which it does in AdGuard Home.

Rules the Go engine refuses as too wide (`isPatternTooWide`: "", "|",
"||", "*", or under 3 characters) are written as refused (null) without
asking the twin; masks of 3 characters are left out, as the twin refuses
them and the Go engine does not. A mask ending in "/*" is asked as the Go
engine reads it, ending in "^".

    python3 tests/data/adguard_wildcards.py
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ENGINE = "@adguard/tsurlfilter@2.2.23"  # the last one that runs on Debian 12's node (20)
OUT = Path(__file__).with_name("adguard-wildcards.json")

LABELS = ["ads", "ad", "adserver", "track", "tracker", "cdn", "x1", "a-b", "example", "com", "net",
          "org", "co", "uk", "metrics", "t"]

# Shapes lists use, and the edges: too short, every name, a URL's port or path.
FIXED = ["*", "a*", "||", "|", "||*^", "|*|", "**", "||*.example.com^", "||ads*.example.com^",
         "*ads*", "|ads*", "ads*|", "||example.*^", "||*-ads.example.net^", "ad*.example^",
         "||ad*server*.com^", "|*.co.uk|", "*.co.uk^", "||track*^", "||cdn.*.example.org|",
         "||x*:8080^", "*metrics.*", "||*ads^", "|*ads|", "@@||*.example.com^", "@@ads*.net|",
         "||ads*.example.com^$important", "||ADS*.Example.COM^", "*.example.com/*"]


def random_mask(rng: random.Random) -> str:
    pieces = []
    for _ in range(rng.randint(1, 3)):
        label = rng.choice(LABELS)
        cut = rng.randint(0, len(label))
        piece = rng.choice([label, label[:cut] + "*", "*" + label[cut:], label[:cut] + "*" + label[cut:]])
        pieces.append(piece)
    body = rng.choice([".", "*", ".*.", "*."]).join(pieces)
    if "*" not in body:
        body += "*"
    start = rng.choice(["", "|", "||", "||"])
    end = rng.choice(["", "^", "|", "^"])
    return start + body + end


def filled(mask: str, rng: random.Random) -> str:
    """A name the mask was meant for: its stars filled in (its anchors may still refuse it)."""
    body = mask.split("$")[0].lstrip("@|").rstrip("|^").lower()
    for _ in range(body.count("*")):
        body = body.replace("*", rng.choice(["", "x", "ads.", ".cdn", "q-1", "example.com"]), 1)
    while ".." in body:
        body = body.replace("..", ".")
    return body.strip(".") or "a"


HOST = re.compile(r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z]+$")


def names(rng: random.Random, rules: list[str]) -> list[str]:
    """Host names only: the twin parses the URL's host, and gives none for "a-.b" or "x.q-1"."""
    found = {name for name in (filled(rule, rng) for rule in rules) if HOST.match(name)}
    while len(found) < len(rules) + 160:
        found.add(".".join(rng.choice(LABELS) for _ in range(rng.randint(1, 4))))
    found.update(["ads.example.com", "adsx.example.com", "www.ads1.example.com", "example.com",
                  "ads.co.uk", "cdn.a.example.org", "cdn.example.org", "t.co", "x1-ads.example.net",
                  "adserver.tracker.com", "metrics.example", "a", "ad.example"])
    return sorted(found)


def mask_of(rule: str) -> str:
    return rule.removeprefix("@@").split("$")[0]


def as_go_reads_it(rule: str) -> str:
    """urlfilter's NewNetworkRule reads "example.org/*" as "example.org^"; the twin does not."""
    mask, dollar, modifiers = rule.partition("$")
    return (mask[:-2] + "^" if mask.endswith("/*") else mask) + dollar + modifiers


def too_wide(rule: str) -> bool:
    mask = mask_of(rule)
    return mask in ("", "|", "||", "*") or len(mask) < 3


JS = """
console.log = console.info = console.warn = console.error;  // the engine's complaints, off stdout
const t = require(process.argv[2]);
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const requests = input.names.map((name) => {
  const request = new t.Request('http://' + name, null, t.RequestType.Document);
  request.isHostnameRequest = true;
  return request;
});
const out = {};
for (const text of input.rules) {
  const rule = new t.NetworkRule(text, 1);
  out[text] = [];
  requests.forEach((request, i) => { if (rule.match(request)) out[text].push(i); });
}
process.stdout.write(JSON.stringify(out));
"""


def main() -> None:
    rng = random.Random(17)
    rules = list(dict.fromkeys(FIXED + [random_mask(rng) for _ in range(240)]))
    hosts = names(rng, rules)
    refused = [rule for rule in rules if too_wide(rule)]
    rules = [rule for rule in rules if rule not in refused and len(mask_of(rule)) != 3]
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", folder,
                        ENGINE], check=True)
        module = str(Path(folder, "node_modules", "@adguard", "tsurlfilter"))
        script = Path(folder, "ask.js")
        script.write_text(JS)
        done = subprocess.run(["node", str(script), module], input=json.dumps(
            {"rules": [as_go_reads_it(rule) for rule in rules], "names": hosts}),
            capture_output=True, text=True, check=True)
    asked = json.loads(done.stdout)
    matched = {rule: asked[as_go_reads_it(rule)] for rule in rules}
    matched.update((rule, None) for rule in refused)
    OUT.write_text(json.dumps({"engine": ENGINE, "names": hosts, "matches": matched}, indent=0) + "\n")
    print(f"{OUT}: {len(matched)} rules x {len(hosts)} names", file=sys.stderr)


if __name__ == "__main__":
    main()
