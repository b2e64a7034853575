"""What dhcpkit 1.0.7 (the last release, for Python 3.4-3.6) needs to serve on Python 3.11.

Applied by our wrapper (`appliance.services.dhcp.dhcp6`) before dhcpkit's
own `main` runs, never by editing the installed package; each fix names the
upstream code it replaces and has a test that shows the upstream failure
(tests/unit/services/dhcp/test_dhcpkit_fixes.py), so a dhcpkit release that
fixes one tells us to drop it.

1. `NonBlockingPool.apply_async` builds `ApplyResult(cache, callback,
   error_callback)`: since Python 3.8 the first argument is the pool, so
   every packet handed to a worker fails ("'dict' object has no attribute
   '_cache'") and no client is ever answered. Same method, the 3.8 call.
2. `LeasequerySqliteStore.create_tables` runs `VACUUM` after `DELETE`s in a
   `with db:` block. Since Python 3.6 the sqlite3 module no longer commits
   before a non-DML statement, so VACUUM runs inside the transaction the
   DELETEs opened and fails ("cannot VACUUM from within a transaction"):
   the server cannot start with a leasequery store. Its connections commit
   before a VACUUM.
3. `import dhcpkit` puts its own `typing` shim (a star import of the real
   one, for Python 3.4) in `sys.modules["typing"]`: every module imported
   after it gets the shim, and `dataclasses` fails on it ("module
   'dhcpkit.typing' has no attribute '_GenericAlias'"). Importing this
   module first puts the real `typing` back.
4. dhcpkit finds its parts through `pkg_resources` (setuptools < 81, pinned
   in pyproject.toml); nothing to patch.
5. dhcpkit expects to start as root and drop to a user it finds by name
   (`user_name`/`group_name` datatypes, `pwd.getpwnam`), and its
   `restore_privileges` looks the running user up with `pwd.getpwuid`.
   The box starts it as its own user already (systemd `User=`, or setpriv
   in the lab, with the two capabilities it needs as ambient ones), and the
   lab's namespaces share the host's /etc/passwd, which has no such user:
   both lookups raise KeyError. The config names the user by number; a
   number with no passwd entry stands for itself, and a server that is not
   root has nothing to restore (its capabilities are ambient, not lent).

And one addition the box needs: static assignments matched by the
link-layer address in the client's DUID (DUID-LL, DUID-LLT), as the box's
static leases are keyed by MAC. dhcpkit's CSV ids `linklayer-id:1:<mac>`
match only a relay's Client Link-Layer Address option (RFC 6939); here the
client is on the link, so the same id is also looked up from its DUID.
"""
from __future__ import annotations

import grp
import os
import pwd
import sqlite3
import sys
import typing
from multiprocessing.pool import RUN, ApplyResult
from queue import Full

import dhcpkit  # noqa: F401 - replaces sys.modules["typing"]: put back below, before anything else loads

sys.modules["typing"] = typing

from dhcpkit.common import privileges  # noqa: E402
from dhcpkit.common.server import config_datatypes  # noqa: E402
from dhcpkit.ipv6.duids import LinkLayerDUID, LinkLayerTimeDUID  # noqa: E402
from dhcpkit.ipv6.options import ClientIdOption  # noqa: E402
from dhcpkit.ipv6.server.extensions.leasequery.sqlite import LeasequerySqliteStore  # noqa: E402
from dhcpkit.ipv6.server.extensions.static_assignments import Assignment  # noqa: E402
from dhcpkit.ipv6.server.extensions.static_assignments.config import CSVStaticAssignmentHandlerFactory  # noqa: E402
from dhcpkit.ipv6.server.extensions.static_assignments.csv import CSVStaticAssignmentHandler  # noqa: E402
from dhcpkit.ipv6.server.nonblocking_pool import NonBlockingPool  # noqa: E402

# The upstream methods, kept for the tests that show why each fix exists.
UPSTREAM = {
    "apply_async": NonBlockingPool.apply_async,
    "open_database": LeasequerySqliteStore.open_database,
    "csv_create": CSVStaticAssignmentHandlerFactory.create,
    "user_name": config_datatypes.user_name,
    "group_name": config_datatypes.group_name,
    "restore_privileges": privileges.restore_privileges,
}


def apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None):
    """dhcpkit's `NonBlockingPool.apply_async` with the Python 3.8+ `ApplyResult(pool, ...)`."""
    if self._state != RUN:
        raise ValueError("Pool not running")
    try:
        result = ApplyResult(self, callback, error_callback)
        self._taskqueue.put(([(result._job, None, func, args, kwds or {})], None), block=False)
    except Full:
        # A full queue drops the packet (the client retries) instead of
        # answering old requests late: dhcpkit's reason for this pool. The
        # result registered itself in the pool's cache: a job left there
        # would keep close() and join() waiting for it forever.
        del self._cache[result._job]
        return None
    return result


class _CommitBeforeVacuum(sqlite3.Connection):
    def execute(self, sql, *args):
        if sql.strip().upper() == "VACUUM" and self.in_transaction:
            self.commit()
        return super().execute(sql, *args)


def open_database(self) -> sqlite3.Connection:
    """dhcpkit's `LeasequerySqliteStore.open_database`, whose connections commit before VACUUM."""
    try:
        db = sqlite3.connect(self.sqlite_filename, isolation_level="IMMEDIATE", factory=_CommitBeforeVacuum)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.row_factory = sqlite3.Row
        return db
    except sqlite3.Error as e:
        raise ValueError(f"Cannot open leasequery db: {e}") from e


class LinkLayerStaticAssignments(CSVStaticAssignmentHandler):
    """dhcpkit's CSV assignments, also found by the link-layer address in the client's DUID.

    Defined here so the handler dhcpkit pickles to its worker processes
    brings this lookup with it (the workers import this module to unpickle it).
    """

    def get_assignment(self, bundle) -> Assignment:
        found = super().get_assignment(bundle)
        if found.address or found.prefix:
            return found
        key = duid_link_layer_id(bundle.request.get_option_of_type(ClientIdOption))
        return self.mapping.get(key, found) if key else found


def duid_link_layer_id(option: ClientIdOption | None) -> str | None:
    """`linklayer-id:<type>:<hex>` of a DUID-LL or DUID-LLT, as dhcpkit's CSV writes ids."""
    duid = option.duid if option is not None else None
    if isinstance(duid, (LinkLayerDUID, LinkLayerTimeDUID)) and duid.link_layer_address:
        return f"linklayer-id:{duid.hardware_type}:{duid.link_layer_address.hex()}"
    return None


def csv_create(self) -> LinkLayerStaticAssignments:
    """dhcpkit's `CSVStaticAssignmentHandlerFactory.create`, making `LinkLayerStaticAssignments`."""
    return LinkLayerStaticAssignments(self.name, self.address_preferred_lifetime, self.address_valid_lifetime,
                                      self.prefix_preferred_lifetime, self.prefix_valid_lifetime)


def user_name(value: str) -> pwd.struct_passwd:
    """dhcpkit's `user_name`, which also takes a user id that has no passwd entry."""
    if not value.isdigit():
        return UPSTREAM["user_name"](value)
    try:
        return pwd.getpwuid(int(value))
    except KeyError:
        return pwd.struct_passwd((value, "x", int(value), int(value), "", "/nonexistent", "/usr/sbin/nologin"))


def group_name(value: str) -> grp.struct_group:
    """dhcpkit's `group_name`, which also takes a group id that has no group entry."""
    if not value.isdigit():
        return UPSTREAM["group_name"](value)
    try:
        return grp.getgrgid(int(value))
    except KeyError:
        return grp.struct_group((value, "x", int(value), []))


def restore_privileges() -> None:
    """dhcpkit's `restore_privileges`, a no-op for a server started as its own user."""
    if os.getuid() != 0:
        return
    UPSTREAM["restore_privileges"]()


def apply() -> None:
    """Install the fixes (idempotent)."""
    # Before dhcpkit's main is imported: it binds restore_privileges by name.
    config_datatypes.user_name = user_name
    config_datatypes.group_name = group_name
    privileges.restore_privileges = restore_privileges
    main = sys.modules.get("dhcpkit.ipv6.server.main")
    if main is not None:
        main.restore_privileges = restore_privileges
    NonBlockingPool.apply_async = apply_async
    LeasequerySqliteStore.open_database = open_database
    CSVStaticAssignmentHandlerFactory.create = csv_create
