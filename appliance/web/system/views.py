from django.conf import settings as django_settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from appliance.box.settings import SettingsError, parse_settings, to_json, to_yaml
from appliance.web import document
from appliance.web.applies import service
from appliance.web.audit.log import document_diff, record, record_change
from appliance.web.system import forms
from appliance.web.system.backup import parse_upload
from appliance.web.sections import SectionEditView
from appliance.web.system.models import Alerts, SshKey
from appliance.web.system.sshkeys import write_authorized_keys


@login_required
def index(request):
    alerts = Alerts.objects.first()
    return render(request, "system/index.html", {
        "restore_form": forms.RestoreForm(), "key_form": forms.SshKeyForm(), "keys": SshKey.objects.all(),
        # Only the kind of each channel: its URL may hold a password or a token.
        "alerts": alerts, "channels": [u.split("://", 1)[0] for u in (alerts.urls if alerts else [])]})


alerts_edit = SectionEditView.as_view(model=Alerts, form_class=forms.AlertsForm, title="Alerts",
                                      success_url="/system/")


@login_required
def backup(request):
    s = document.current_settings()
    fmt = request.GET.get("format", "yaml")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    body, ctype = (to_json(s), "application/json") if fmt == "json" else (to_yaml(s), "application/yaml")
    resp = HttpResponse(body, content_type=ctype)
    resp["Content-Disposition"] = f'attachment; filename="appliance-settings-{stamp}.{fmt}"'
    record(request.user, "backup", f"settings.{fmt}")
    return resp


@login_required
def restore(request):
    """Upload -> validate -> show the diff; a second POST loads it and applies."""
    if request.method == "POST" and "confirm" in request.POST:
        data = request.session.pop("restore_document", None)
        if data is None:
            messages.error(request, "Nothing to restore: upload the file again.")
            return redirect("system:index")
        settings = parse_settings(data)
        before = document.build_document()
        document.load_document(settings)
        record_change(request.user, "restore", "settings", before, document.build_document())
        try:
            rec = service.queue_apply(request.user, settings, kind="restore")
        except service.ApplyBusy as e:
            messages.error(request, f"Restored into the console, not applied: {e}")
            return redirect("applies:index")
        return redirect("applies:detail", pk=rec.pk)
    form = forms.RestoreForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        f = form.cleaned_data["file"]
        try:
            settings = parse_upload(f.name, f.read())
        except SettingsError as e:
            return render(request, "system/restore.html", {"errors": e.errors, "form": form}, status=400)
        data = settings.model_dump(mode="json")
        request.session["restore_document"] = data
        diff = document_diff(document.normalized(), data)
        return render(request, "system/restore.html", {"diff": diff, "form": form})
    return render(request, "system/restore.html", {"form": form}, status=400 if request.method == "POST" else 200)


@login_required
@require_POST
def key_add(request):
    form = forms.SshKeyForm(request.POST)
    if form.is_valid():
        key = form.save()
        write_authorized_keys(django_settings.APPLIANCE_AUTHORIZED_KEYS)
        record(request.user, "create", f"ssh key {key.name}")
        messages.success(request, f"Added SSH key {key.name}.")
        return redirect("system:index")
    return render(request, "system/index.html", {"restore_form": forms.RestoreForm(), "key_form": form,
                                                 "keys": SshKey.objects.all()}, status=400)


@login_required
@require_POST
def key_delete(request, pk):
    key = get_object_or_404(SshKey, pk=pk)
    key.delete()
    write_authorized_keys(django_settings.APPLIANCE_AUTHORIZED_KEYS)
    record(request.user, "delete", f"ssh key {key.name}")
    return redirect("system:index")
