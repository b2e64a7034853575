"""The SSH keys page writes authorized_keys for the box's admin login."""
from __future__ import annotations

import os
import tempfile


def write_authorized_keys(path: str) -> None:
    from appliance.web.system.models import SshKey

    if not path:
        return
    text = "".join(f"{k.key.strip()}\n" for k in SshKey.objects.all())
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".authorized_keys-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
