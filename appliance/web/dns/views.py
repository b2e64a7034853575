from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from appliance.web import sources
from appliance.web.dns import forms, models
from appliance.web.sections import SectionEditView


@login_required
def index(request):
    return render(request, "dns/index.html", {"reading": sources.get().dns(),
                                              "service": models.DnsService.objects.first()})


config_edit = SectionEditView.as_view(model=models.DnsService, form_class=forms.DnsServiceForm,
                                      title="DNS settings", success_url="/dns/")
