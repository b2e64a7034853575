from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from appliance.web import sources
from appliance.web.relay import forms, models
from appliance.web.sections import SectionEditView


@login_required
def index(request):
    src = sources.get()
    table = src.relay_connections()
    domains = []
    if table.ok:
        counters = table.value["counters"]["domains"]
        domains = sorted(({"domain": d, **c} for d, c in counters.items()),
                         key=lambda c: c["bytes_up"] + c["bytes_down"], reverse=True)[:20]
    return render(request, "relay/index.html", {"reading": src.relay(), "table": table,
                                                "domains": domains,
                                                "service": models.RelayService.objects.first()})


config_edit = SectionEditView.as_view(model=models.RelayService, form_class=forms.RelayServiceForm,
                                      title="Relay settings", success_url="/relay/")
