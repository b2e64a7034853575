from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from appliance.box.settings import SettingsError
from appliance.web import boxes, document
from appliance.web.applies import service
from appliance.web.applies.models import ApplyRecord


def preview():
    """The diff an apply of the console's document would make (a dry run), or why not."""
    try:
        res = boxes.get_box().apply(document.current_settings(), dry_run=True)
        return res.diff, None
    except SettingsError as e:
        return "", "; ".join(f"{k}: {m}" for k, ms in e.errors.items() for m in ms)
    except Exception as e:  # noqa: BLE001 - a box that cannot be observed still has a history
        return "", f"{type(e).__name__}: {e}"


@login_required
def index(request):
    diff, problem = preview()
    return render(request, "applies/index.html", {
        "records": ApplyRecord.objects.all()[:100], "diff": diff, "problem": problem,
        "awaiting": service.awaiting()})


@login_required
def detail(request, pk):
    rec = get_object_or_404(ApplyRecord, pk=pk)
    left = service.seconds_left(rec) if rec.state == ApplyRecord.AWAITING else None
    return render(request, "applies/detail.html", {"rec": rec, "left": None if left is None else round(left, 1)})


@login_required
@require_POST
def apply(request):
    try:
        rec = service.queue_apply(request.user)
    except SettingsError as e:
        for k, ms in e.errors.items():
            for m in ms:
                messages.error(request, f"{k}: {m}")
        return redirect("applies:index")
    except service.ApplyBusy as e:
        messages.error(request, str(e))
        return redirect("applies:index")
    return redirect("applies:detail", pk=rec.pk)


@login_required
@require_POST
def confirm(request, pk):
    rec = get_object_or_404(ApplyRecord, pk=pk)
    try:
        rec = service.confirm(rec, request.user)
    except service.NotAllowed as e:
        if request.headers.get("Accept", "").startswith("application/json"):
            return JsonResponse({"detail": str(e)}, status=409)
        messages.error(request, str(e))
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse({"id": rec.pk, "state": rec.state})
    return redirect("applies:detail", pk=pk)


@login_required
@require_POST
def rollback(request, pk):
    rec = get_object_or_404(ApplyRecord, pk=pk)
    try:
        rb = service.rollback(rec, request.user)
    except service.NotAllowed as e:
        messages.error(request, str(e))
        return redirect("applies:detail", pk=pk)
    return redirect("applies:detail", pk=rb.pk)
