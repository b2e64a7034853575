"""The console's database survives a power cut: every commit synced (synchronous=FULL), WAL on a file."""
import sqlite3

import pytest
from django.conf import settings
from django.db import connection


@pytest.mark.django_db
def test_every_connection_syncs_each_commit():
    with connection.cursor() as c:
        c.execute("PRAGMA synchronous")
        assert c.fetchone()[0] == 2  # FULL


def test_the_database_file_is_in_wal_mode(tmp_path):
    # The same statements the console's connections run first (an in-memory test database has no WAL).
    db = sqlite3.connect(tmp_path / "console.sqlite3")
    db.executescript(settings.DATABASES["default"]["OPTIONS"]["init_command"])
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
