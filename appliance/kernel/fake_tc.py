"""An in-memory `Tc`: clsact filters and tcx links as data, for unit tests.

Links are pinned in the `FakeBpf` they are given (so a pin directory with a
link in it cannot be removed, as on the BPF filesystem), and name the
program they run by its id. With `FakeDevices`, a link whose device is gone
reports ifindex 0 and attaching to a missing device fails, as in the kernel.
`tcx=False` behaves like Debian's 6.1: no tcx, links cannot be made.
"""
from __future__ import annotations

import errno
import itertools

from appliance.kernel.base import KernelError
from appliance.kernel.bpf import BpfError, LinkInfo
from appliance.kernel.fake_bpf import FakeBpf, FakeLink
from appliance.kernel.tc import BPF_LINK_TYPE_TCX, BPF_TCX_INGRESS, FILTER_NAME, HANDLE, PRIO, Filter


class FakeTc:
    def __init__(self, bpf: FakeBpf, devices=None, tcx: bool = True):
        self.bpf = bpf
        self.devices = devices
        self.tcx = tcx
        self.clsact: set[tuple[str | None, int]] = set()
        self.filter_list: dict[tuple[str | None, int], list[Filter]] = {}
        self.calls: list[tuple] = []
        self._ids = itertools.count(1)

    def tcx_supported(self) -> bool:
        return self.tcx

    def _exists(self, netns, ifindex) -> bool:
        if self.devices is None:
            return True
        return any(d.ifindex == ifindex for d in self.devices.devices(netns))

    # clsact
    def filter_attach(self, netns, ifindex, prog_fd, prio=None, name=None) -> None:
        self.calls.append(("filter_attach", netns, ifindex))
        prog = self.bpf.program(prog_fd)
        if not self._exists(netns, ifindex):
            raise KernelError(f"netns {netns or '(own)'}: tc filter on ifindex {ifindex}: "
                              f"(19, 'No such device')")
        self.clsact.add((netns, ifindex))
        others = [f for f in self.filter_list.get((netns, ifindex), [])
                  if (f.prio, f.handle) != (PRIO, HANDLE)]
        self.filter_list[(netns, ifindex)] = sorted(
            others + [Filter(PRIO, HANDLE, "bpf", FILTER_NAME, prog.id)], key=lambda f: f.prio)

    def filter_detach(self, netns, ifindex, prio=None) -> None:
        self.calls.append(("filter_detach", netns, ifindex))
        left = [f for f in self.filter_list.pop((netns, ifindex), [])
                if (f.prio, f.handle) != (PRIO, HANDLE)]
        if left:
            self.filter_list[(netns, ifindex)] = left
        else:
            self.clsact.discard((netns, ifindex))

    def filters(self, netns, ifindex) -> list[Filter]:
        if not self._exists(netns, ifindex):
            return []
        return list(self.filter_list.get((netns, ifindex), []))

    # tcx
    def _pinned_link(self, pin) -> FakeLink | None:
        link = self.bpf.pinned.get(pin)
        if link is not None and not isinstance(link, FakeLink):
            raise BpfError("link info", errno.EINVAL)
        return link

    def _info(self, link: FakeLink) -> LinkInfo:
        gone = not link.attached or not self._exists(link.netns, link.ifindex)
        return LinkInfo(link.type, link.id, link.prog.id, 0 if gone else link.ifindex, link.attach_type)

    def link_attach(self, netns, pin, ifindex, prog_fd) -> str:
        self.calls.append(("link_attach", netns, pin, ifindex))
        prog = self.bpf.program(prog_fd)
        link = self._pinned_link(pin)
        if link is not None:
            if self._info(link).ifindex == ifindex:
                link.prog = prog
                return "updated"
            link.attached = False
            self.bpf.unpin(pin)
        if not self.tcx:
            raise BpfError("bpf_link_create", errno.EINVAL)
        if not self._exists(netns, ifindex):
            raise BpfError("bpf_link_create", errno.ENODEV)
        fd = self.bpf._new_fd(FakeLink(next(self._ids), BPF_LINK_TYPE_TCX, prog, netns, ifindex,
                                       BPF_TCX_INGRESS))
        try:
            self.bpf.pin(fd, pin)
        except BaseException:
            self.bpf.fds[fd].attached = False
            raise
        finally:
            self.bpf.close(fd)
        return "created"

    def link_detach(self, pin) -> bool:
        self.calls.append(("link_detach", pin))
        link = self._pinned_link(pin)
        if link is None:
            return False
        link.attached = False
        self.bpf.unpin(pin)
        return True

    def link(self, pin) -> LinkInfo | None:
        link = self._pinned_link(pin)
        return None if link is None else self._info(link)

    def tcx_programs(self, netns, ifindex) -> list[int]:
        if not self.tcx:
            return []
        return [link.prog.id for link in self.bpf.pinned.values()
                if isinstance(link, FakeLink) and link.attached
                and (link.netns, link.ifindex) == (netns, ifindex) and self._exists(netns, ifindex)]
