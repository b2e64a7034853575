"""Backup and restore of the settings document: bytes in, a validated document or field errors out."""
from __future__ import annotations

from appliance.box.settings import Settings, from_json, from_yaml


def parse_upload(name: str, data: bytes) -> Settings:
    """Raise SettingsError naming the field (or the line and column of a syntax error)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        from appliance.box.settings import NON_FIELD, SettingsError
        raise SettingsError({NON_FIELD: [f"not UTF-8 text (byte {e.start})"]}) from None
    if name.endswith(".json") or text.lstrip().startswith("{"):
        return from_json(text)
    return from_yaml(text)
