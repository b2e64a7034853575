from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from appliance.web import sources
from appliance.web.dns.api.serializers import DnsServiceSerializer
from appliance.web.sections import SingletonViewSet


class DnsServiceViewSet(SingletonViewSet):
    serializer_class = DnsServiceSerializer


class DnsStatsView(APIView):
    """The DNS service's statistics; 503 with the reason when it is not running."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        reading = sources.get().dns()
        if not reading.ok:
            return Response({"detail": reading.problem}, status=503)
        return Response(reading.value)
