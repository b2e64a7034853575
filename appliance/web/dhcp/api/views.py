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
    """Kea's current leases, or why there are none (`running: false`)."""

    @extend_schema(responses={200: s.LeaseListSerializer})
    def get(self, request):
        reading = sources.leases()
        return Response(s.LeaseListSerializer({"running": reading.ok, "problem": reading.problem,
                                               "leases": reading.value or []}).data)
