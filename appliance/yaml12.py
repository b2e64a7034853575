"""YAML as people write settings: YAML 1.2's numbers on PyYAML's safe loader.

PyYAML follows YAML 1.1, where an unquoted MAC such as 18:00:00:00:00:12 is
a base-60 integer and a leading zero makes an octal one ("010" is 8, "096"
raises ValueError out of the loader). Here only decimal, 0x hex and 0o octal
are integers; anything else that looks numeric stays a string, for the
settings' validation to name the field.
"""
from __future__ import annotations

import re

import yaml


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's integers and floats (the rest of its resolvers kept)."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$"), list("-+0123456789"))


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    # SafeLoader's own constructor is YAML 1.1's (see the module's docstring).
    text = loader.construct_scalar(node)
    if text.startswith("0x"):
        return int(text[2:], 16)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 10)


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."))


def load_yaml(text: str):
    """The document in `text` (yaml.YAMLError when it is not YAML)."""
    return yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
