from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from appliance.web import sources
from appliance.web.relay.api.serializers import RelayServiceSerializer
from appliance.web.sections import SingletonViewSet


class RelayServiceViewSet(SingletonViewSet):
    serializer_class = RelayServiceSerializer


class RelayStatsView(APIView):
    """The relay's statistics, or why there are none (`running: false`)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        reading = sources.get().relay()
        return Response({"running": reading.ok, "problem": reading.problem, "stats": reading.value})
