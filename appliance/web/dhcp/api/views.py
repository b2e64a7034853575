from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from appliance.web import sources
from appliance.web.dhcp.api import serializers as s
from appliance.web.sections import SectionViewSet, SingletonViewSet


class DhcpServerViewSet(SingletonViewSet):
    serializer_class = s.DhcpServerSerializer


class DhcpPoolViewSet(SectionViewSet):
    serializer_class = s.DhcpPoolSerializer


class StaticLeaseViewSet(SectionViewSet):
    serializer_class = s.StaticLeaseSerializer


class LeaseListView(APIView):
    """Kea's current leases; 503 with the reason when the DHCP server is not running."""

    @extend_schema(responses={200: s.LeaseSerializer(many=True)})
    def get(self, request):
        reading = sources.get().leases()
        if not reading.ok:
            return Response({"detail": reading.problem}, status=503)
        return Response(s.LeaseSerializer(reading.value, many=True).data)
