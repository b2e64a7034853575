from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from appliance.web import sources
from appliance.web.dns.api.serializers import DnsServiceSerializer
from appliance.web.sections import SingletonViewSet


class DnsServiceViewSet(SingletonViewSet):
    serializer_class = DnsServiceSerializer


class DnsStatsView(APIView):
    """The DNS service's statistics, or why there are none (`running: false`)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        reading = sources.get().dns()
        return Response({"running": reading.ok, "problem": reading.problem, "stats": reading.value})
