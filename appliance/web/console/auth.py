"""Who is asking: the session's user and the API token's user, each read with one plain query.

Every console page reads its session's user and every API call its token's;
through the ORM, building those queries (a `get(pk=...)`, a
`select_related("user").get(key=...)`) cost several times running them, a
quarter of a small page's time. The queries here are the ORM's own, written
out once; the user comes back as the ORM's model instance (`Model.from_db`),
so nothing downstream can tell. The rules are Django's and DRF's unchanged:

- `AuthenticationMiddleware` is Django's, and `get_user` is Django's
  `django.contrib.auth.get_user` line for line, except that when the session's
  backend is a `ModelBackend` that does not override `get_user`, the user row
  is read here (then `user_can_authenticate`, as `ModelBackend.get_user` does).
  The session hash is verified (a changed password logs other sessions out),
  and a session of an unlisted backend is anonymous, as before.
- `TokenAuthentication` is DRF's, with the token and its user read in one
  query; an unknown key or an inactive user is refused with DRF's words,
  and so is a token past its lifetime (`console.tokens`).
"""
from __future__ import annotations

from functools import partial

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, _get_user_session_key, load_backend
from django.contrib.auth import middleware as auth_middleware
from django.contrib.auth.backends import ModelBackend
from django.db import connections, router
from django.utils.crypto import constant_time_compare
from django.utils.functional import SimpleLazyObject
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from appliance.web.console import tokens

_SQL: dict = {}


def _fields(model):
    return [f for f in model._meta.concrete_fields]


def _select(model, alias: str, conn) -> str:
    q = conn.ops.quote_name
    return ", ".join(f"{alias}.{q(f.column)}" for f in _fields(model))


def _user_sql(conn) -> str:
    User = auth.get_user_model()
    q = conn.ops.quote_name
    return (f"SELECT {_select(User, 'u', conn)} FROM {q(User._meta.db_table)} u "
            f"WHERE u.{q(User._meta.pk.column)} = %s")


def _token_sql(conn) -> str:
    User = auth.get_user_model()
    q = conn.ops.quote_name
    return (f"SELECT {_select(Token, 't', conn)}, {_select(User, 'u', conn)} FROM {q(Token._meta.db_table)} t "
            f"INNER JOIN {q(User._meta.db_table)} u ON t.{q(Token._meta.get_field('user').column)} = "
            f"u.{q(User._meta.pk.column)} WHERE t.{q(Token._meta.pk.column)} = %s")


def _query(name: str, build, model, params):
    db = router.db_for_read(model)
    conn = connections[db]
    sql = _SQL.get((db, name))
    if sql is None:
        sql = _SQL[(db, name)] = build(conn)
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return db, cursor.fetchone()


_CONVERTERS: dict = {}


def _converters(model, db):
    """Per column, the ORM's converters of a database value (`SQLCompiler.get_converters`), and the attnames."""
    key = (model, db)
    if key not in _CONVERTERS:
        conn = connections[db]
        cols = [f.get_col(model._meta.db_table) for f in _fields(model)]
        _CONVERTERS[key] = ([(col, conn.ops.get_db_converters(col) + col.get_db_converters(conn)) for col in cols],
                            [f.attname for f in _fields(model)])
    return _CONVERTERS[key]


def _from_db(model, db, row):
    """A model instance from its columns, converted as the ORM converts them (e.g. SQLite's datetimes)."""
    conn = connections[db]
    converters, attnames = _converters(model, db)
    values = []
    for (col, convs), v in zip(converters, row):
        for convert in convs:
            v = convert(v, col, conn)
        values.append(v)
    return model.from_db(db, attnames, values)


def user_by_pk(pk):
    """The user with this primary key, or None."""
    User = auth.get_user_model()
    db, row = _query("user", _user_sql, User, [pk])
    return None if row is None else _from_db(User, db, row)


def token_with_user(key: str):
    """The API token with this key, its `user` already set; or None."""
    User = auth.get_user_model()
    db, row = _query("token", _token_sql, Token, [key])
    if row is None:
        return None
    n = len(_fields(Token))
    token = _from_db(Token, db, row[:n])
    token.user = _from_db(User, db, row[n:])
    return token


def _backend_user(backend, user_id):
    if isinstance(backend, ModelBackend) and type(backend).get_user is ModelBackend.get_user:
        user = user_by_pk(user_id)
        return user if user is not None and backend.user_can_authenticate(user) else None
    return backend.get_user(user_id)


def get_user(request):
    """`django.contrib.auth.get_user` (Django 5.2), the user read by `_backend_user`."""
    from django.contrib.auth.models import AnonymousUser

    user = None
    try:
        user_id = _get_user_session_key(request)
        backend_path = request.session[BACKEND_SESSION_KEY]
    except KeyError:
        pass
    else:
        if backend_path in settings.AUTHENTICATION_BACKENDS:
            backend = load_backend(backend_path)
            user = _backend_user(backend, user_id)
            # Verify the session
            if hasattr(user, "get_session_auth_hash"):
                session_hash = request.session.get(HASH_SESSION_KEY)
                if not session_hash:
                    session_hash_verified = False
                else:
                    session_auth_hash = user.get_session_auth_hash()
                    session_hash_verified = constant_time_compare(session_hash, session_auth_hash)
                if not session_hash_verified:
                    # If the current secret does not verify the session, try with the fallback
                    # secrets and stop when a matching one is found.
                    if session_hash and any(constant_time_compare(session_hash, fallback_auth_hash)
                                            for fallback_auth_hash in user.get_session_auth_fallback_hash()):
                        request.session.cycle_key()
                        request.session[HASH_SESSION_KEY] = session_auth_hash
                    else:
                        request.session.flush()
                        user = None

    return user or AnonymousUser()


def _cached_user(request):
    if not hasattr(request, "_cached_user"):
        request._cached_user = get_user(request)
    return request._cached_user


class AuthenticationMiddleware(auth_middleware.AuthenticationMiddleware):
    """Django's, with `request.user` from `get_user` above."""

    def process_request(self, request):
        super().process_request(request)
        request.user = SimpleLazyObject(partial(_cached_user, request))


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's `Authorization: Token <key>`, the token and its user in one query."""

    def authenticate_credentials(self, key):
        token = token_with_user(key)
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        if tokens.expired(token):
            raise exceptions.AuthenticationFailed("Token expired: make a new one on the account page.")
        return (token.user, token)
