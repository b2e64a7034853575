from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.shortcuts import render

from appliance.web.audit.forms import AuditFilterForm
from appliance.web.audit.models import AuditEntry


@login_required
def index(request):
    form = AuditFilterForm(request.GET)
    entries = AuditEntry.objects.all()
    if form.is_valid() and form.cleaned_data["q"]:
        q = form.cleaned_data["q"]
        entries = entries.filter(Q(username__icontains=q) | Q(action__icontains=q) | Q(target__icontains=q))
    return render(request, "audit/index.html", {"form": form, "entries": entries[:200]})
