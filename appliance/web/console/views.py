"""First run, login (lockout, TOTP), account, and the dashboard."""
from django.contrib import messages
from django.contrib.auth import authenticate, get_user_model, login, logout, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token

from appliance.web import sources
from appliance.web.audit.log import record, record_failure
from appliance.web.console import forms, lockout, setupcode, tokens
from appliance.web.console.models import FirstAdmin, TotpDevice


def not_found(request, exception=None):
    """JSON for the API (its clients parse errors), the plain page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "not found"}, status=404)
    from django.views.defaults import page_not_found
    return page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "server error"}, status=500)
    from django.views.defaults import server_error as default
    return default(request)


SETUP = "(setup)"  # the lockout's user name for setup-code guesses


def setup(request):
    """The first run: the setup code, then the admin account (see console.setupcode)."""
    if setupcode.admin_exists():
        return redirect("console:login")
    setupcode.ensure()
    form = forms.SetupForm(request.POST or None)
    ip = lockout.client_ip(request)
    if request.method == "POST" and form.is_valid():
        wait = lockout.locked(SETUP, ip)
        if wait:
            form.add_error(None, f"Too many wrong setup codes; try again in {lockout.wait_text(wait)}.")
            return render(request, "console/setup.html", {"form": form}, status=429)
        if not setupcode.matches(form.cleaned_data["code"]):
            lockout.failed(SETUP, ip)
            record_failure("setup-failed", "setup code", ip)
            form.add_error("code", "Wrong setup code: it is shown on the box's own screen and serial console.")
            return render(request, "console/setup.html", {"form": form}, status=403)
        User = get_user_model()
        try:
            with transaction.atomic():
                user = User.objects.create_superuser(form.cleaned_data["username"], "", form.cleaned_data["password"])
                FirstAdmin.objects.create(id=1, user=user)  # a second first admin fails here, whole
        except IntegrityError:  # someone else was first
            return redirect("console:login")
        setupcode.discard()
        lockout.succeeded(SETUP, ip)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        record(user, "setup", f"admin account {user.username}", source=ip)
        messages.success(request, "Admin account created. Next: the setup wizard.")
        return redirect("network:wizard")
    return render(request, "console/setup.html", {"form": form})


def _next(request):
    nxt = request.POST.get("next") or request.GET.get("next") or "/"
    return nxt if url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()}) else "/"


def _locked(request, template, form, wait):
    form.add_error(None, f"Too many failed logins; try again in {lockout.wait_text(wait)}.")
    response = render(request, template, {"form": form}, status=429)
    response["Retry-After"] = str(int(wait + 0.999))
    return response


def login_view(request):
    form = forms.LoginForm(request.POST or None)
    ip = lockout.client_ip(request)
    if request.method == "POST" and form.is_valid():
        username = form.cleaned_data["username"]
        wait = lockout.locked(username, ip)
        if wait:
            record_failure("login-locked", username, ip)
            return _locked(request, "console/login.html", form, wait)
        user = authenticate(request, username=username, password=form.cleaned_data["password"])
        if user is None:
            lockout.failed(username, ip)
            record_failure("login-failed", username, ip)
            form.add_error(None, "Wrong user name or password.")
            return render(request, "console/login.html", {"form": form}, status=401)
        device = getattr(user, "totp", None)
        if device is not None and device.confirmed:
            # The failure count stays until the second factor is right too.
            request.session["totp_user"] = user.pk
            request.session["totp_next"] = _next(request)
            return redirect("console:totp")
        lockout.succeeded(username, ip)
        login(request, user)
        record(user, "login", user.username, source=ip)
        return redirect(_next(request))
    return render(request, "console/login.html", {"form": form})


def totp_view(request):
    pk = request.session.get("totp_user")
    if pk is None:
        return redirect("console:login")
    user = get_user_model().objects.get(pk=pk)
    form = forms.TotpForm(request.POST or None)
    ip = lockout.client_ip(request)
    if request.method == "POST" and form.is_valid():
        wait = lockout.locked(user.username, ip)
        if wait:
            return _locked(request, "console/totp.html", form, wait)
        if user.totp.verify(form.cleaned_data["code"]):
            nxt = request.session.pop("totp_next", "/")
            request.session.pop("totp_user", None)
            lockout.succeeded(user.username, ip)
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            record(user, "login", f"{user.username} (TOTP)", source=ip)
            return redirect(nxt)
        lockout.failed(user.username, ip)
        record_failure("login-failed", f"{user.username} (TOTP)", ip)
        form.add_error("code", "Wrong code.")
        return render(request, "console/totp.html", {"form": form}, status=401)
    return render(request, "console/totp.html", {"form": form})


@require_POST
def logout_view(request):
    logout(request)
    return redirect("console:login")


@login_required
def account(request):
    import pyotp

    device, _ = TotpDevice.objects.get_or_create(user=request.user, defaults={"secret": pyotp.random_base32()})
    pw_form = PasswordChangeForm(request.user)
    totp_form = forms.TotpForm()
    if request.method == "POST":
        what = request.POST.get("what")
        if what == "password":
            pw_form = PasswordChangeForm(request.user, request.POST)
            if pw_form.is_valid():
                update_session_auth_hash(request, pw_form.save())
                record(request.user, "password", request.user.username)
                messages.success(request, "Password changed.")
                return redirect("console:account")
        elif what == "totp-enable":
            totp_form = forms.TotpForm(request.POST)
            if totp_form.is_valid() and device.verify(totp_form.cleaned_data["code"]):
                device.confirmed = True
                device.save()
                record(request.user, "totp-enable", request.user.username)
                messages.success(request, "Two-factor login is on.")
                return redirect("console:account")
            totp_form.add_error("code", "Wrong code: check the clock of the device.")
        elif what == "totp-disable" and device.confirmed:
            # A fresh code, not only the session: a session left open must not turn the second factor off.
            totp_form = forms.TotpForm(request.POST)
            if totp_form.is_valid() and device.verify(totp_form.cleaned_data["code"]):
                device.delete()
                record(request.user, "totp-disable", request.user.username)
                messages.success(request, "Two-factor login is off.")
                return redirect("console:account")
            totp_form.add_error("code", "Wrong code: two-factor login stays on.")
        elif what == "token":
            tokens.new_token(request.user)
            record(request.user, "api-token", request.user.username)
            return redirect("console:account")
    uri = pyotp.TOTP(device.secret).provisioning_uri(name=request.user.username, issuer_name="appliance")
    token = Token.objects.filter(user=request.user).first()
    return render(request, "console/account.html", {
        "pw_form": pw_form, "totp_form": totp_form, "device": device, "uri": uri, "token": token,
        "token_expires": tokens.expires(token) if token else None,
        "token_expired": tokens.expired(token) if token else False})


def status() -> dict:
    """The dashboard's figures: ports, services, leases, DNS, relay (each says if not running).

    At most a second old: the dashboard, its tiles and the JSON share one reading.
    """
    return sources.cached("status", _status)


def _status() -> dict:
    src = sources.get()
    out = {}
    try:
        # The box's health events reach the audit log whenever the console looks at the box.
        from appliance.web.audit.health import import_events
        import_events(src.health_events())
    except Exception:  # noqa: BLE001 - a tile must not fail for the audit log's sake
        pass
    for name in ("ports", "services", "leases", "dhcp_pool", "dns", "relay"):
        try:
            r = getattr(src, name)()
        except Exception as e:  # noqa: BLE001 - one broken tile must not break the page
            out[name] = {"ok": False, "problem": f"{type(e).__name__}: {e}", "value": None}
            continue
        value = r.value
        if name == "leases" and r.ok:
            value = {"count": len(value)}
        out[name] = {"ok": r.ok, "problem": r.problem, "value": value}
    return out


def tiles_html() -> str:
    """The status tiles, rendered once for every viewer of the same reading (the dashboard
    and its tiles, polled every 5 s by every open page)."""
    reading = status()
    return sources.cached("tiles", lambda: render_to_string("console/tiles.html", {"status": reading}),
                          stamp=reading)


@login_required
def dashboard(request):
    return render(request, "console/dashboard.html", {"tiles": tiles_html()})


@login_required
def tiles(request):
    return HttpResponse(tiles_html())


@login_required
def status_json(request):
    return JsonResponse(status())
