from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_POST

from appliance.box.flows import lint_custom
from appliance.web import sources
from appliance.web.sections import SectionEditView
from appliance.web.switch import forms, models


@login_required
def index(request):
    return render(request, "switch/index.html", {"trace_form": forms.TraceForm(),
                                                 "custom": models.CustomFlows.objects.first()})


@login_required
def flow_table(request):
    """Flows with their counters (htmx polls it)."""
    return render(request, "switch/flow_table.html", {"dump": sources.get().flows()})


def _base_flows():
    """The applied flow table, which custom flows are linted against."""
    try:
        bridge = sources.get().bridge()
    except (OSError, ValueError):  # no readable applied state: lint the custom flows alone then
        return []
    return list(bridge.flows) if bridge else []


@login_required
@require_POST
def lint(request):
    findings = lint_custom(request.POST.get("custom", ""), _base_flows())
    return render(request, "switch/lint.html", {"findings": findings})


@login_required
@require_POST
def trace(request):
    form = forms.TraceForm(request.POST)
    result, error = None, None
    if form.is_valid():
        try:
            result = sources.get().trace(form.cleaned_data["flow"])
        except ValueError as e:
            error = str(e)
    return render(request, "switch/trace.html", {"result": result, "error": error, "form": form})


class CustomFlowsEdit(SectionEditView):
    model = models.CustomFlows
    title = "Custom flows"
    success_url = "/switch/"
    template_name = "switch/custom_form.html"


custom_edit = CustomFlowsEdit.as_view()
