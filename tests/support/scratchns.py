"""Throwaway network namespaces with unique names, removed on exit even after a failure.

`with ScratchNamespaces("kc", 2) as (a, b):` gives two fresh namespaces
(lo up, IPv6 off so no autoconfiguration traffic counts in a test's bytes);
`sh(ns, ...)` runs a command in one.
"""
from __future__ import annotations

import os
import secrets
import subprocess


def sh(ns: str | None, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    full = list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(full, capture_output=True, text=True, check=check, timeout=30, input=input)


class ScratchNamespaces:
    def __init__(self, prefix: str, count: int = 1):
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.names = [f"{prefix}{tag}{i}" for i in range(count)]
        self.made: list[str] = []

    def __enter__(self) -> list[str]:
        try:
            for name in self.names:
                sh(None, "ip", "netns", "add", name)
                self.made.append(name)
                sh(name, "ip", "link", "set", "lo", "up")
                for scope in ("all", "default"):
                    sh(name, "sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return list(self.names)

    def __exit__(self, *exc) -> None:
        for name in reversed(self.made):
            sh(None, "ip", "netns", "del", name, check=False)
        self.made.clear()
