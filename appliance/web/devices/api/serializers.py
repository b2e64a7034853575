from rest_framework import serializers

NAME_MAX = 63


class DeviceSerializer(serializers.Serializer):
    mac = serializers.CharField(read_only=True, help_text="aa:bb:cc:dd:ee:ff")
    name = serializers.CharField(read_only=True, help_text="the given name, else the lease's hostname; '' if none")
    name_source = serializers.ChoiceField(["user", "static", "dhcp", ""], read_only=True,
                                          help_text="where the name comes from")
    vendor = serializers.CharField(read_only=True, help_text="from the IEEE OUI registry; '' if unknown")
    private = serializers.BooleanField(read_only=True, help_text="a locally administered (random) MAC")
    ipv4 = serializers.ListField(child=serializers.IPAddressField(protocol="IPv4"), read_only=True)
    ipv6 = serializers.ListField(child=serializers.IPAddressField(protocol="IPv6"), read_only=True)
    first_seen = serializers.DateTimeField(read_only=True)
    last_seen = serializers.DateTimeField(read_only=True)
    online = serializers.BooleanField(read_only=True, help_text="sent a frame in the last 5 minutes")
    paused = serializers.BooleanField(read_only=True, help_text="its frames are dropped but DHCP, DNS to the box,"
                                                                " ARP and neighbour discovery")
    counted = serializers.BooleanField(read_only=True, help_text="the running datapath counts its traffic")
    rx_bytes = serializers.IntegerField(read_only=True, min_value=0, help_text="delivered to the device")
    rx_packets = serializers.IntegerField(read_only=True, min_value=0)
    tx_bytes = serializers.IntegerField(read_only=True, min_value=0, help_text="sent by the device")
    tx_packets = serializers.IntegerField(read_only=True, min_value=0)


class DeviceUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=NAME_MAX, allow_blank=True, trim_whitespace=True, required=False,
                                 help_text="the device's name; '' gives it back the lease's hostname")
    paused = serializers.BooleanField(required=False, help_text="true: paused until resumed (within 2 s, no apply)")

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError({"name": "give name or paused"})
        return attrs

    def validate_name(self, value: str) -> str:
        if any(not ch.isprintable() for ch in value):
            raise serializers.ValidationError("the name has a control character")
        return value
