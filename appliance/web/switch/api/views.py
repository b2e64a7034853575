from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from appliance.box.flows import lint_custom
from appliance.box.status import NothingApplied
from appliance.web import sources
from appliance.web.sections import SingletonViewSet
from appliance.web.switch.api import serializers as s
from appliance.web.switch.views import _base_flows


class CustomFlowsViewSet(SingletonViewSet):
    serializer_class = s.CustomFlowsSerializer


class FlowDumpView(APIView):
    """dump-flows of the applied flow table, with counters when the datapath runs."""

    @extend_schema(responses={200: s.FlowDumpSerializer})
    def get(self, request):
        return Response(s.FlowDumpSerializer(sources.get().flows()).data)


class TraceView(APIView):
    """ofproto/trace: the reference classifier's decision and the datapath's.

    409 before the first apply, and for a flow the applied table cannot read (naming `flow`).
    """

    schema_rules = ["flow is a packet in ofproto/trace syntax (in_port=downlink,udp,...): a grammar, "
                    "which a JSON schema cannot hold"]

    @extend_schema(request=s.TraceRequestSerializer, responses={200: s.TraceSerializer})
    def post(self, request):
        req = s.TraceRequestSerializer(data=request.data)
        req.is_valid(raise_exception=True)
        try:
            result = sources.get().trace(req.validated_data["flow"])
        except NothingApplied as e:
            return Response({"detail": str(e)}, status=409)
        except ValueError as e:
            # The text is a string as the schema says; the flow grammar and the applied table's
            # port names (which it is read against) are what refuse it.
            return Response({"flow": [str(e)]}, status=409)
        return Response(s.TraceSerializer(result).data)


class LintView(APIView):
    """Lint custom flows (syntax, overlap, shadowing) without saving them."""

    @extend_schema(request=s.LintRequestSerializer, responses={200: s.FindingSerializer(many=True)})
    def post(self, request):
        req = s.LintRequestSerializer(data=request.data)
        req.is_valid(raise_exception=True)
        return Response(lint_custom(req.validated_data["custom"], _base_flows()))
