from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from appliance.web import sources
from appliance.web.relay import forms, models
from appliance.web.sections import SectionEditView


@login_required
def index(request):
    return render(request, "relay/index.html", {"reading": sources.get().relay(),
                                                "service": models.RelayService.objects.first()})


config_edit = SectionEditView.as_view(model=models.RelayService, form_class=forms.RelayServiceForm,
                                      title="Relay settings", success_url="/relay/")
