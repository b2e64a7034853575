"""The box the console manages: the one `appliance.box.locate` finds in the environment.

`APPLIANCE_BOX_FACTORY` ("module:function", a Django setting) replaces the
whole box, which is how tests run the console on fakes.
"""
from __future__ import annotations

import importlib

from django.conf import settings

from appliance.box import locate
from appliance.box.runtime import Box


def get_box() -> Box:
    factory = getattr(settings, "APPLIANCE_BOX_FACTORY", "")
    if factory:
        module, _, name = factory.partition(":")
        return getattr(importlib.import_module(module), name)()
    return locate.box()
