from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
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


class RelayConnectionsView(APIView):
    """The relay's connection table: live connections (path "relay" or "kernel"),
    the last ended ones (`?history=N`, default 50) and the per-domain and
    per-client counters; `running: false` with the problem when the relay is down."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT},
                   parameters=[OpenApiParameter("history", {"type": "integer", "minimum": 1, "maximum": 1000},
                                                description="ended connections to list (1-1000, default 50)")])
    def get(self, request):
        text = request.query_params.get("history", "50")
        if not text.isdigit() or not 1 <= int(text) <= 1000:
            return Response({"history": [f"{text!r} is not a whole number from 1 to 1000"]}, status=400)
        limit = int(text)
        reading = sources.get().relay_connections(limit)
        return Response({"running": reading.ok, "problem": reading.problem, **(reading.value or {})})
