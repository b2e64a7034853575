"""The SSH keys page writes authorized_keys for the box's admin login."""
from __future__ import annotations

from appliance import durable


def write_authorized_keys(path: str) -> None:
    from appliance.web.system.models import SshKey

    if not path:
        return
    text = "".join(f"{k.key.strip()}\n" for k in SshKey.objects.all())
    durable.write_atomic(path, text, 0o600)
