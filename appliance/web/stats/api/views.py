from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from appliance.services.timeseries import filled
from appliance.web import sources
from appliance.web.stats import charts, params

_POINTS = {"type": "array", "description": "[bucket start (Unix time), value] for every bucket, oldest"
           " first; a bucket nothing was counted in is 0",
           "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}}
SERIES_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "step", "since", "until", "points"],
    "properties": {
        "name": {"type": "string"},
        "step": {"type": "integer", "enum": [60, 3600]},
        "since": {"type": "integer", "minimum": 0, "description": "the first bucket's start"},
        "until": {"type": "integer", "minimum": 0, "description": "now, on the box's clock"},
        "points": _POINTS,
    },
}
TOP_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["step", "since", "until", "devices"],
    "properties": {
        "step": {"type": "integer", "enum": [60, 3600]},
        "since": {"type": "integer", "minimum": 0},
        "until": {"type": "integer", "minimum": 0},
        "devices": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["mac", "name", "rx_bytes", "tx_bytes"],
            "properties": {
                "mac": {"type": "string"},
                "name": {"type": "string", "description": "the device's name in the console; '' if none"},
                "rx_bytes": {"type": "number", "minimum": 0, "description": "delivered to it since `since`"},
                "tx_bytes": {"type": "number", "minimum": 0, "description": "sent by it since `since`"},
            }}},
    },
}


class SeriesView(APIView):
    """One time series the box keeps for the charts: the DNS server's answers per minute
    (`dns.*`), the bytes each device sent and received (`dev.*`). Minutes are kept a day,
    hours a month; a series nobody wrote yet is all zeros."""

    @extend_schema(responses={200: SERIES_SCHEMA}, parameters=params.SERIES_PARAMETERS)
    def get(self, request):
        found, errors = params.series(request.query_params)
        if errors:
            return Response(errors, status=400)
        points = sources.get().series(found["name"], found["step"], found["since"])
        return Response({**found, "points": [list(p) for p in filled(points, found["step"], found["since"],
                                                                       found["until"])]})


class TopDevicesView(APIView):
    """The devices that moved the most bytes (received and sent) since `since`, most first."""

    @extend_schema(responses={200: TOP_SCHEMA}, parameters=params.TOP_PARAMETERS)
    def get(self, request):
        found, errors = params.top(request.query_params)
        if errors:
            return Response(errors, status=400)
        devices = charts.top_devices(found["step"], found["since"], found["limit"])
        return Response({"step": found["step"], "since": found["since"], "until": found["until"],
                         "devices": devices})
