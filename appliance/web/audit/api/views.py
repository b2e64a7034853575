from rest_framework import viewsets
from rest_framework.pagination import PageNumberPagination

from appliance.web.audit.api.serializers import AuditEntrySerializer
from appliance.web.audit.models import AuditEntry


class AuditPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first, a page at a time (`?page=N`, `?page_size=` up to 500)."""

    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    pagination_class = AuditPagination
