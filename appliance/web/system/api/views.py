from django.conf import settings as django_settings
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from appliance.box.settings import SettingsError, parse_settings, to_data
from appliance.web import apischema, document
from appliance.web.audit.log import record, record_change
from appliance.web.sections import SingletonViewSet
from appliance.web.system.api.serializers import AlertsSerializer, SshKeySerializer
from appliance.web.system.models import SshKey
from appliance.web.system.sshkeys import write_authorized_keys


class SettingsDocumentView(APIView):
    """GET the settings document; PUT a whole one (validated; errors keyed by field path).

    PUT changes the console's settings only; POST /api/applies/ puts them on the box.
    """

    writes_document = True  # its schema is the document's own (appliance.web.openapi)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        try:
            return Response(document.cached_data())
        except SettingsError as e:
            return Response({"detail": "the console holds no valid settings yet", "errors": e.errors},
                            status=409)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def put(self, request):
        limit = django_settings.APPLIANCE_RESTORE_MAX_BYTES
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            return Response({"detail": f"a settings document is at most {limit} bytes"}, status=413)
        errors = apischema.body_errors(apischema.document_request_schema(), request.data)
        if errors:
            raise ValidationError(errors)
        try:
            settings = parse_settings(request.data)
        except SettingsError as e:
            raise apischema.RuleConflict({("non_field_errors" if k == "__all__" else k): v
                                          for k, v in e.errors.items()}) from None
        before = document.build_document()
        document.load_document(settings)
        record_change(request.user, "restore", "settings", before, document.build_document())
        return Response(to_data(settings))


class SshKeyViewSet(viewsets.ModelViewSet):
    schema_rules = ["name is not another key's name"]
    queryset = SshKey.objects.all()
    serializer_class = SshKeySerializer

    def perform_create(self, serializer):
        key = serializer.save()
        write_authorized_keys(django_settings.APPLIANCE_AUTHORIZED_KEYS)
        record(self.request.user, "create", f"ssh key {key.name}")

    def perform_update(self, serializer):
        key = serializer.save()
        write_authorized_keys(django_settings.APPLIANCE_AUTHORIZED_KEYS)
        record(self.request.user, "update", f"ssh key {key.name}")

    def perform_destroy(self, instance):
        instance.delete()
        write_authorized_keys(django_settings.APPLIANCE_AUTHORIZED_KEYS)
        record(self.request.user, "delete", f"ssh key {instance.name}")


class AlertsViewSet(SingletonViewSet):
    serializer_class = AlertsSerializer
