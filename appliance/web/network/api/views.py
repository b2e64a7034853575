from appliance.web.network.api import serializers as s
from appliance.web.sections import SingletonViewSet


class PortsViewSet(SingletonViewSet):
    serializer_class = s.PortsSerializer


class GatewayViewSet(SingletonViewSet):
    serializer_class = s.GatewaySerializer


class LanViewSet(SingletonViewSet):
    serializer_class = s.LanSerializer


class AdminViewSet(SingletonViewSet):
    serializer_class = s.AdminSerializer


class VProxyViewSet(SingletonViewSet):
    serializer_class = s.VProxySerializer


class Ipv6ViewSet(SingletonViewSet):
    serializer_class = s.Ipv6Serializer


class FailsafeViewSet(SingletonViewSet):
    serializer_class = s.FailsafeSerializer
