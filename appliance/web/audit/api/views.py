from rest_framework import viewsets

from appliance.web.audit.api.serializers import AuditEntrySerializer
from appliance.web.audit.models import AuditEntry


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
