from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import render

from appliance.web.audit.forms import AuditFilterForm
from appliance.web.audit.models import AuditEntry

PAGE_SIZE = 50


@login_required
def index(request):
    try:
        from appliance.web import sources
        from appliance.web.audit.health import import_events
        import_events(sources.get().health_events())
    except Exception:  # noqa: BLE001 - the log shows what it has when the box cannot be read
        pass
    form = AuditFilterForm(request.GET)
    entries = AuditEntry.objects.all()
    q = form.cleaned_data["q"] if form.is_valid() else ""
    if q:
        entries = entries.filter(Q(username__icontains=q) | Q(action__icontains=q) | Q(target__icontains=q)
                                 | Q(source__icontains=q))
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "audit/index.html", {"form": form, "page": page, "entries": page.object_list, "q": q})
