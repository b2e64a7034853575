"""`vsctl`: bridges and ports, as `ovs-vsctl` takes them.

Like ovs-vsctl, one command line may hold several commands separated by
`--`, each with its own options (`-- --may-exist add-port br0 p1 -- set
Interface p1 ofport_request=1 type=dummy`), and they apply together or
not at all. Columns that only say how OVS should run a port or bridge
(`type`, `datapath_type`, `fail-mode`, `protocols`, ...) are accepted and
have nothing to change here; `ofport_request` numbers the port. Columns
that would change forwarding and are not modelled (`tag`, `trunks`, ...)
are refused by name.
"""
from __future__ import annotations

from typing import TextIO

from .bridge import BridgeError, BridgeStore

# Columns accepted with no effect: they say how OVS runs, not what it forwards.
_INERT = {
    "interface": {"type", "options", "mtu_request", "admin_state", "external_ids", "other_config",
                  "name", "mac", "ingress_policing_rate", "ingress_policing_burst"},
    "bridge": {"datapath_type", "fail_mode", "fail-mode", "protocols", "other_config",
               "other-config", "external_ids", "stp_enable", "rstp_enable", "mcast_snooping_enable",
               "datapath_id", "name"},
    "port": {"external_ids", "other_config", "name", "vlan_mode"},
}
_USAGE = ("usage: vsctl [--may-exist|--if-exists] add-br|del-br|list-br|br-exists|add-port|del-port|"
          "list-ports|port-to-br|show|set|set-fail-mode|get-fail-mode|del-fail-mode ... [-- COMMAND ...]")


def split_commands(argv: list[str]) -> list[tuple[set[str], list[str]]]:
    """[(options, words)] for each command between `--` separators."""
    cmds: list[tuple[set[str], list[str]]] = []
    cur_opts: set[str] = set()
    cur: list[str] = []
    for a in argv + ["--"]:
        if a == "--":
            if cur:
                cmds.append((cur_opts, cur))
            elif cur_opts:
                raise BridgeError(f"options {' '.join(sorted(cur_opts))} without a command")
            cur_opts, cur = set(), []
        elif a.startswith("--") and not cur:
            cur_opts.add(a)
        elif a.startswith("--") and a in ("--may-exist", "--if-exists"):
            cur_opts.add(a)
        else:
            cur.append(a)
    return cmds


def run(argv: list[str], out: TextIO, store: BridgeStore) -> bool:
    """Run every command; returns whether the store changed (to be saved)."""
    commands = split_commands([a for a in argv if not a.startswith("--timeout") and a != "--no-wait"])
    if not commands:
        raise BridgeError(_USAGE)
    changed = False
    for opts, words in commands:
        changed |= _one(opts, words, out, store)
    return changed


def _need(words: list[str], n: int, usage: str) -> None:
    if len(words) < n:
        raise BridgeError(f"usage: vsctl {usage}")


def _one(opts: set[str], words: list[str], out: TextIO, store: BridgeStore) -> bool:
    cmd, rest = words[0], words[1:]
    may_exist, if_exists = "--may-exist" in opts, "--if-exists" in opts
    if cmd == "add-br":
        _need(rest, 1, "add-br BRIDGE")
        store.add_br(rest[0], may_exist=may_exist)
        return True
    if cmd == "del-br":
        _need(rest, 1, "del-br BRIDGE")
        store.del_br(rest[0], if_exists=if_exists)
        return True
    if cmd == "list-br":
        for name in sorted(store.bridges):
            out.write(name + "\n")
        return False
    if cmd == "br-exists":
        _need(rest, 1, "br-exists BRIDGE")
        if rest[0] not in store.bridges:
            raise BridgeError(f"no bridge named {rest[0]}")
        return False
    if cmd == "add-port":
        _need(rest, 2, "add-port BRIDGE PORT [ofport_request=N]")
        br, port = rest[0], rest[1]
        request = [c for c in rest[2:] if c.startswith("ofport_request=")]
        number = None
        if request:
            try:
                number = int(request[-1].split("=", 1)[1])
            except ValueError:
                raise BridgeError(f"{request[-1]!r}: ofport_request takes a number") from None
        store.add_port(br, port, number, may_exist=may_exist)
        others = [c for c in rest[2:] if not c.startswith("ofport_request=")]
        if others:
            _set(store, "port", port, others)
        return True
    if cmd == "del-port":
        _need(rest, 1, "del-port [BRIDGE] PORT")
        if len(rest) >= 2:
            store.get(rest[0]).del_port(rest[1], if_exists=if_exists)
        else:
            try:
                b = store.port_to_bridge(rest[0])
            except BridgeError:
                if if_exists:
                    return False
                raise
            b.del_port(rest[0])
        return True
    if cmd == "list-ports":
        _need(rest, 1, "list-ports BRIDGE")
        for name in sorted(store.get(rest[0]).ports):
            out.write(name + "\n")
        return False
    if cmd == "port-to-br":
        _need(rest, 1, "port-to-br PORT")
        out.write(store.port_to_bridge(rest[0]).name + "\n")
        return False
    if cmd == "show":
        for name in sorted(store.bridges):
            b = store.bridges[name]
            out.write(f'    Bridge {name}\n')
            for pname, num in sorted(b.ports.items(), key=lambda kv: kv[1]):
                out.write(f'        Port {pname}\n            ofport: {num}\n')
            out.write(f'        flows: {len(b.flows)}\n')
        return False
    if cmd in ("set-fail-mode", "del-fail-mode", "get-fail-mode"):
        _need(rest, 1, f"{cmd} BRIDGE")
        store.get(rest[0])
        if cmd == "get-fail-mode":
            out.write("secure\n")
        return False
    if cmd == "set":
        _need(rest, 3, "set TABLE RECORD COLUMN=VALUE ...")
        _set(store, rest[0].lower(), rest[1], rest[2:])
        return True
    raise BridgeError(f"unknown command {cmd!r} ({_USAGE})")


def _set(store: BridgeStore, table: str, record: str, columns: list[str]) -> None:
    if table not in _INERT:
        raise BridgeError(f"set: unknown table {table!r} (Bridge, Port, Interface)")
    if table == "bridge":
        store.get(record)
    for col in columns:
        key, sep, value = col.partition("=")
        base = key.split(":", 1)[0]
        if not sep:
            raise BridgeError(f"set {table} {record}: {col!r} is not COLUMN=VALUE")
        if table in ("interface", "port") and base == "ofport_request":
            try:
                number = int(value)
            except ValueError:
                raise BridgeError(f"{col!r}: ofport_request takes a number") from None
            store.port_to_bridge(record).renumber(record, number)
        elif base in _INERT[table]:
            continue
        else:
            raise BridgeError(f"set {table} {record} {base}: not supported (every port is a "
                              "trunk carrying every VLAN; VLANs are set by flows)")
