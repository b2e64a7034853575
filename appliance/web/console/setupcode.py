"""The first run's one-time setup code: only someone at the box may create its admin.

An unconfigured box bridges its NICs, takes an address by DHCP and serves
its console to both sides: the first visitor to /setup/ became the admin,
then root through SSH keys or noVNC. Now /setup/ also asks for a code that
only someone with the box in hand can read:

- it is kept in a root-only file (0600) with the console's state
  (`APPLIANCE_SETUP_CODE_FILE`), made by `manage.py setupcode` (which prints
  it: `make demo` shows it) or by the first visit to /setup/;
- on the image it is shown on the local console, serial and screen: the
  login prompt's issue file (`APPLIANCE_SETUP_ISSUE`, in agetty's
  /etc/issue.d), written with the code at boot and taken away with it;
- creating the admin uses it up: both files are removed.

The code is 15 characters of Crockford's base32 (75 bits), shown in groups
of five; what is typed is read the same with or without dashes, spaces or
lower case, and O/I/L stand for 0/1/1.
"""
from __future__ import annotations

import hmac
import os
import secrets
import shutil
from pathlib import Path

from django.conf import settings

from appliance.kernel.base import KernelError
from appliance.kernel.process import LinuxProcesses

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 15
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})

ISSUE = """\
This box has no admin account yet. Open its console from a computer on the
home side (https://<the box's address>/setup/) and enter this setup code:

    {code}

"""


def code_path() -> Path:
    return Path(settings.APPLIANCE_SETUP_CODE_FILE)


def issue_path() -> Path | None:
    return Path(settings.APPLIANCE_SETUP_ISSUE) if settings.APPLIANCE_SETUP_ISSUE else None


def admin_exists() -> bool:
    from django.contrib.auth import get_user_model

    from appliance.web.console.models import FirstAdmin

    return get_user_model().objects.exists() or FirstAdmin.objects.exists()


def normalize(text: str) -> str:
    return "".join(c for c in (text or "").upper() if c.isalnum()).translate(_READ_AS)


def pretty(code: str) -> str:
    return "-".join(code[i:i + 5] for i in range(0, len(code), 5))


def _read() -> str | None:
    try:
        return normalize(code_path().read_text())
    except FileNotFoundError:
        return None


def ensure() -> str | None:
    """The setup code (made now if there is none), or None once an admin exists (and the code is gone)."""
    if admin_exists():
        discard()
        return None
    code = _read()
    path = code_path()
    if not code:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: theirs is the code
            code = _read()
        else:
            with os.fdopen(fd, "w") as f:
                f.write(pretty(new) + "\n")
            code = new
    os.chmod(path, 0o600)  # root-only even if it was copied in with other rights
    _write_issue(code)
    return pretty(code)


def matches(given: str) -> bool:
    """Is `given` the setup code? (False when there is none.)"""
    code = _read()
    return bool(code) and hmac.compare_digest(normalize(given).encode(), code.encode())


def discard() -> None:
    """The code is used up: remove it, and take it off the local console."""
    code_path().unlink(missing_ok=True)
    issue = issue_path()
    if issue is not None and issue.exists():
        issue.unlink(missing_ok=True)
        _reload_gettys()


def _write_issue(code: str) -> None:
    issue = issue_path()
    if issue is None:
        return
    text = ISSUE.format(code=pretty(code))
    try:
        if issue.read_text() == text:
            return
    except FileNotFoundError:
        pass
    issue.parent.mkdir(parents=True, exist_ok=True)
    tmp = issue.with_name(f".{issue.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # agetty reads it as root
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, issue)
    _reload_gettys()


AGETTY_ISSUE_DIRS = ("/etc/issue.d", "/run/issue.d")


def _reload_gettys() -> None:
    # A login prompt already on screen shows the new issue without a key press (`agetty --reload`);
    # only for agetty's own issue directories, never for a file of a test's.
    issue = issue_path()
    agetty = shutil.which("agetty", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if agetty and issue is not None and str(issue.parent) in AGETTY_ISSUE_DIRS:
        try:
            LinuxProcesses().run(None, [agetty, "--reload"], timeout=5)
        except KernelError:
            pass  # no prompt refreshed: the code is still in the issue file for the next one
