"""The cache's values as JSON, not pickle.

Django's Redis cache pickles what it stores, so whoever can write a key to
Redis runs code in every console process and the Celery worker that reads
it. What the console keeps there (login failure counts and locks, the apply
lock's token, DRF's throttle history) is numbers, strings and lists; a value
JSON cannot hold is refused when it is set, not silently pickled.
"""
from __future__ import annotations

import json


class JsonSerializer:
    def dumps(self, obj):
        # Integers stay plain, as Django's serializer keeps them, so INCR works on them in Redis.
        if type(obj) is int:
            return obj
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data):
        try:
            return int(data)
        except ValueError:
            pass
        try:
            return json.loads(data)
        except ValueError:  # UnicodeDecodeError too: e.g. a pickle someone put there
            raise CacheValueRefused(f"a cache value that is not JSON ({len(data)} bytes, {bytes(data[:8])!r}...)") \
                from None


class CacheValueRefused(ValueError):
    pass
