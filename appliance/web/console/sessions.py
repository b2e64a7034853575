"""Django's database sessions, with the per-request read as one plain SELECT.

Every console page and API call reads its session; through the ORM building
that query cost about as much as running it. The query and its meaning are
Django's own (`db.SessionStore._get_session_from_db`): the row by key and
only if it has not expired, else no session (and a new key when saved).
Writing, cycling the key, logout and expiry are Django's code unchanged.
(`cached_db` over Redis was measured and was slower than SQLite here.)
"""
from django.contrib.sessions.backends import db
from django.db import connections, router
from django.utils import timezone


class SessionStore(db.SessionStore):
    def load(self):
        key = self.session_key
        if key:
            conn = connections[router.db_for_read(self.model)]
            table = conn.ops.quote_name(self.model._meta.db_table)
            with conn.cursor() as cursor:
                cursor.execute(f"SELECT session_data FROM {table} WHERE session_key = %s AND expire_date > %s",
                               [key, conn.ops.adapt_datetimefield_value(timezone.now())])
                row = cursor.fetchone()
            if row is not None:
                return self.decode(row[0])
        self._session_key = None
        return {}
