from celery.result import AsyncResult
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from appliance.box.settings import SettingsError
from appliance.web.applies import service
from appliance.web.applies.api import serializers as s
from appliance.web.applies.models import ApplyRecord


def _settings_errors(e: SettingsError) -> dict:
    return {("non_field_errors" if k == "__all__" else k): v for k, v in e.errors.items()}


class ApplyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The apply history; POST queues an apply of the current settings document."""

    queryset = ApplyRecord.objects.all()
    serializer_class = s.ApplyRecordSerializer

    @extend_schema(request=s.ApplyRequestSerializer, responses={202: s.ApplyRecordSerializer})
    def create(self, request):
        try:
            rec = service.queue_apply(request.user)
        except SettingsError as e:
            raise ValidationError(_settings_errors(e)) from None
        except service.ApplyBusy as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(rec).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: s.ApplyRecordSerializer})
    @action(detail=True, methods=["post"])
    def confirm(self, request, pk=None):
        try:
            rec = service.confirm(self.get_object(), request.user)
        except service.NotAllowed as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(rec).data)

    @extend_schema(request=None, responses={202: s.ApplyRecordSerializer})
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        try:
            rb = service.rollback(self.get_object(), request.user)
        except service.NotAllowed as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(rb).data, status=status.HTTP_202_ACCEPTED)


class TaskStatusView(APIView):
    """A queued task's state, as Celery and the apply history know it."""

    @extend_schema(responses={200: s.TaskStatusSerializer})
    def get(self, request, task_id: str):
        rec = ApplyRecord.objects.filter(task_id=task_id).first()
        try:
            res = AsyncResult(task_id)
            state, result = res.state, (str(res.result) if res.ready() else None)
        except Exception as e:  # noqa: BLE001 - no result backend reachable
            state, result = "UNKNOWN", str(e)
        return Response({"task_id": task_id, "state": state, "result": result,
                         "apply": rec.pk if rec else None, "apply_state": rec.state if rec else None})
