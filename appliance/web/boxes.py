"""The box the console manages, made from Django settings.

`APPLIANCE_HOST_NETNS` places it (empty: this machine; `lab-box`: inside the
lab's box namespace), `APPLIANCE_BOX_STATE`/`APPLIANCE_BOX_RUN` are its
`Layout`. `APPLIANCE_BOX_FACTORY` ("module:function") replaces the whole box,
which is how tests run the console on fakes.
"""
from __future__ import annotations

import importlib

from django.conf import settings

from appliance.box.placement import Placement
from appliance.box.plan import Layout


def placement() -> Placement:
    ns = getattr(settings, "APPLIANCE_HOST_NETNS", "")
    return Placement.inside(ns) if ns else Placement()


def layout() -> Layout:
    return Layout(state_dir=settings.APPLIANCE_BOX_STATE, run_dir=settings.APPLIANCE_BOX_RUN)


def get_box():
    factory = getattr(settings, "APPLIANCE_BOX_FACTORY", "")
    if factory:
        module, _, name = factory.partition(":")
        return getattr(importlib.import_module(module), name)()
    from appliance.box.runtime import Box

    return Box(placement=placement(), layout=layout())
