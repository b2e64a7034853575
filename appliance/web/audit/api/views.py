from rest_framework import viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination

from appliance.web.audit.api.serializers import AuditEntrySerializer
from appliance.web.audit.models import AuditEntry


def _whole(name: str, text: str, most: int | None = None) -> int:
    """A query parameter the schema says is a whole number from 1 (to `most`), or a 400 naming it."""
    if not (text.isascii() and text.isdigit() and int(text) >= 1 and (most is None or int(text) <= most)):
        upto = f" to {most}" if most else ""
        raise ValidationError({name: [f"{text!r} is not a whole number from 1{upto}"]})
    return int(text)


class AuditPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request):
        # DRF falls back to the default on a bad page_size; the schema says 1-500, so say so.
        text = request.query_params.get(self.page_size_query_param)
        return self.page_size if text is None else _whole(self.page_size_query_param, text, self.max_page_size)

    def paginate_queryset(self, queryset, request, view=None):
        # DRF reads a blank page as page 1 and `page=last` as the last: the schema says a whole
        # number from 1, so anything else is refused naming it.
        text = request.query_params.get(self.page_query_param)
        if text is not None:
            _whole(self.page_query_param, text)
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        params = super().get_schema_operation_parameters(view)
        for p in params:
            if p["name"] == self.page_size_query_param:
                p["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
            elif p["name"] == self.page_query_param:
                p["schema"] = {"type": "integer", "minimum": 1}
        return params


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first, a page at a time (`?page=N`, `?page_size=` up to 500)."""

    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    pagination_class = AuditPagination
