"""API tokens: they expire, and a password change revokes them.

A token never expired and outlived the password it was traded for, so a
token copied once kept working after the owner changed the password
because of it. Now a token is good for `APPLIANCE_API_TOKEN_DAYS` after it
was made (DRF's `Token.created`), and changing the password deletes it:
Django tells every password validator of a change (`password_changed`, on
the user's `save()` after `set_password`: the account page, `manage.py
changepassword`, anything), so one entry of AUTH_PASSWORD_VALIDATORS does it
wherever the change comes from. (The other sessions end by Django's own
rule: the session keeps a hash of the password.)
"""
from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone


def lifetime() -> timedelta:
    return timedelta(days=settings.APPLIANCE_API_TOKEN_DAYS)


def expires(token) -> datetime:
    return token.created + lifetime()


def expired(token, now: datetime | None = None) -> bool:
    return (now or timezone.now()) >= expires(token)


def fresh_token(user):
    """The user's token, a new one if it had none or its had expired."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.filter(user=user).first()
    if token is not None and not expired(token):
        return token
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


def new_token(user):
    from rest_framework.authtoken.models import Token

    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


class RevokeTokensOnPasswordChange:
    """Accepts every password; when one changes, the user's API token is deleted."""

    def validate(self, password, user=None):
        return None

    def password_changed(self, password, user=None):
        if user is not None and user.pk is not None:
            from rest_framework.authtoken.models import Token

            Token.objects.filter(user=user).delete()

    def get_help_text(self):
        return "Changing it revokes the account's API token and ends its other sessions."
