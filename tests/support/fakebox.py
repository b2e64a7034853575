"""A Box on fakes that survives across processes (console workers, Celery workers) for the browser tests.

The fakes (kernel, switch, services, files, and with the files the box's
applied state) are pickled into the state directory after every progress
line, so a worker killed mid-apply leaves exactly the half-applied state a
real box would, and the next worker finds it. `APPLIANCE_FAKE_STEP_DELAY`
slows each step so progress can be watched.
"""
from __future__ import annotations

import json
import os
import pickle
import time

from appliance.box import locate
from appliance.box.fake import MemFs
from appliance.box.files import RealFileSystem
from appliance.box.runtime import Box
from appliance.box.status import Reading
from tests.support import webfakes as fakes


def _dir() -> str:
    return locate.layout().state_dir  # APPLIANCE_BOX_STATE, as the stack sets it


class StateOnDisk(MemFs):
    """The box's files in memory (pickled with the rest), its applied state on the disk as well,
    where the browser tests read it as they would on a real box."""

    def __init__(self, state_file: str):
        super().__init__()
        self.state_file = state_file

    def write(self, path, content, mode=0o644, owner=None):
        super().write(path, content, mode, owner)
        if path == self.state_file:
            RealFileSystem().write(path, content, mode, owner)

    def remove(self, path):
        super().remove(path)
        if path == self.state_file:
            RealFileSystem().remove(path)


class PersistentFakeBox(Box):
    def _path(self):
        return os.path.join(_dir(), "fakes.pickle")

    def restore_fakes(self):
        try:
            with open(self._path(), "rb") as f:
                self.kernel, self._switch, self._services, self._fs = pickle.load(f)
        except FileNotFoundError:
            pass

    def save_fakes(self):
        tmp = self._path() + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump((self.kernel, self._switch, self._services, self._fs), f)
        os.replace(tmp, self._path())

    @property
    def applier(self):
        box, real = self, Box.applier.fget(self)

        class Saving:  # the recovery path uses the applier directly
            def apply(self, new, old=None, progress=None):
                try:
                    return real.apply(new, old, progress)
                finally:
                    box.save_fakes()

            def teardown(self, plan, progress=None):
                try:
                    return real.teardown(plan, progress)
                finally:
                    box.save_fakes()
        return Saving()

    def apply(self, settings, *, dry_run=False, progress=None, change=None):
        delay = float(os.environ.get("APPLIANCE_FAKE_STEP_DELAY", "0"))

        def slow(line):
            self.save_fakes()
            if progress:
                progress(line)
            if delay and line.startswith("step "):
                time.sleep(delay)
        res = super().apply(settings, dry_run=dry_run, progress=slow, change=change)
        self.save_fakes()
        return res


def make_box():
    base = fakes.new_box(_dir())
    box = PersistentFakeBox(placement=base.placement, layout=base.layout, kernel=base.kernel,
                            switch=base._switch, services=base._services, fs=StateOnDisk(base.layout.state_file))
    box.restore_fakes()
    return box


class E2eSources(fakes.FakeSources):
    """Leases from a file the test writes (as Kea would hand them out); counters that grow."""

    def leases(self):
        try:
            with open(os.path.join(_dir(), "leases.json")) as f:
                return Reading(json.load(f))
        except FileNotFoundError:
            return Reading([])

    def ports(self):
        r = super().ports()
        if r.ok:
            now = time.time()
            for p in r.value:
                p["rx_bytes"], p["tx_bytes"], p["time"] = int(now * 1000) % 10**9, int(now * 700) % 10**9, now
        return r


def make_sources():
    return E2eSources()
