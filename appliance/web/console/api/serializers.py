from rest_framework import serializers

from appliance.web.fields import StrictCharField


class TileSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    problem = serializers.CharField(allow_null=True)
    value = serializers.JSONField(allow_null=True)


class StatusSerializer(serializers.Serializer):
    ports = TileSerializer()
    services = TileSerializer()
    leases = TileSerializer()
    dns = TileSerializer()
    relay = TileSerializer()


class TokenRequestSerializer(serializers.Serializer):
    username = StrictCharField()
    password = StrictCharField()
    code = StrictCharField(required=False, help_text="TOTP code, when the user has one")


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires = serializers.DateTimeField()
