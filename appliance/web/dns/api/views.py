from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from appliance.web import sources
from appliance.web.audit.log import record
from appliance.web.dns import querylog
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


class DnsLogView(APIView):
    """The query log, newest first: each entry's time (Unix), client address, the device's MAC
    (`mac`, null when unknown), name, type, what the box did (`action`), the rule or list that
    decided (`origin`), the answer's rcode and whether the answer cache gave it. Filtered by
    client, device, a part of the name, action and time. The DNS server's memory is searched
    first, then its log on disk (`dns.query_log.max_mb`, `max_days`); `running: false` with
    the problem when the DNS service is not running (the log on disk is still searched)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, parameters=querylog.PARAMETERS)
    def get(self, request):
        found, errors = querylog.filters(request.query_params)
        if errors:
            return Response(errors, status=400)
        reading = sources.get().dns_log(**found)
        return Response({"running": reading.ok, "problem": reading.problem, "entries": reading.value or []})


class DnsFakeIpFlushView(APIView):
    """Forget every fake-IP mapping that no live connection pins.

    A client that still holds a forgotten address from an earlier answer
    cannot connect with it (the relay refuses it at once) until the name is
    asked again, which gives the name its old address back. A forgotten
    address goes to no other name for a day (kept across restarts), so it
    never leads to a wrong site. Answers `{"removed": n, "kept": pinned}`;
    409 when the DNS service is not running. Audit-logged.
    """

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
    def post(self, request):
        reading = sources.get().flush_fake_ips()
        if not reading.ok:
            return Response({"detail": reading.problem}, status=409)
        record(request.user, "flush-fake-ips", "dns",
               f"{reading.value['removed']} mappings forgotten, {reading.value['kept']} pinned kept")
        return Response(reading.value)
