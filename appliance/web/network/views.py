from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from appliance.box.settings import NON_FIELD, SettingsError, parse_settings
from appliance.web import boxes, document
from appliance.web.audit.log import record_change
from appliance.web.network import forms, models, wizard
from appliance.web.sections import SectionEditView

SECTIONS = [
    ("ports", "Ports", models.Ports),
    ("gateway", "Gateway (the modem)", models.Gateway),
    ("lan", "LAN", models.Lan),
    ("admin", "Admin (the console's address)", models.Admin),
    ("vproxy", "vproxy (DNS and proxy namespace)", models.VProxy),
    ("ipv6", "IPv6", models.Ipv6),
    ("failsafe", "Failsafe (while the box's DNS or DHCP does not answer)", models.Failsafe),
]


@login_required
def index(request):
    rows = []
    for key, title, model in SECTIONS:
        obj = model.objects.first()
        rows.append((key, title, obj.to_doc() if obj else None))
    return render(request, "network/index.html", {"rows": rows})


def edit_view(key, title, model):
    return SectionEditView.as_view(model=model, title=title, success_url="/network/")


def detected():
    try:
        box = boxes.get_box()
        found = wizard.detect(box.kernel, box.placement.host_ns)
        applied = box.applied_settings()
        if applied is not None:
            found.applied_ports = (applied.ports.uplink, applied.ports.downlink)
        return found, None
    except Exception as e:  # noqa: BLE001 - the wizard still works by hand
        return wizard.Detected(), f"could not look at the hardware: {e}"


# Wizard form field <- document path of the errors that belong to it.
_WIZARD_FIELDS = {"ports.uplink": "uplink", "ports.downlink": "downlink", "gateway.ip": "gateway_ip",
                  "lan.prefix": "lan_prefix"}


@login_required
def setup_wizard(request):
    found, problem = detected()
    proposal = wizard.propose(found)
    nics = found.nics or [proposal["ports"]["uplink"], proposal["ports"]["downlink"]]
    if request.method == "POST":
        form = forms.WizardForm(request.POST, nics=nics)
        if form.is_valid():
            c = form.cleaned_data
            try:
                doc = wizard.topology(c["uplink"], c["downlink"], c["gateway_ip"], c["lan_prefix"])
                settings = parse_settings(doc)
            except ValueError as e:
                form.add_error("lan_prefix" if "network" in str(e) else "gateway_ip", str(e))
            except SettingsError as e:
                for path, msgs in e.errors.items():
                    field = next((f for p, f in _WIZARD_FIELDS.items() if path.startswith(p)), None)
                    for m in msgs:
                        form.add_error(field, m if field else f"{path}: {m}" if path != NON_FIELD else m)
            else:
                before = document.build_document()
                document.load_document(settings)
                record_change(request.user, "wizard", "settings", before, document.build_document())
                messages.success(request, "The transparent topology is set up. Review it, then Apply.")
                return redirect("network:index")
    else:
        form = forms.WizardForm(nics=nics, initial={
            "uplink": proposal["ports"]["uplink"], "downlink": proposal["ports"]["downlink"],
            "gateway_ip": proposal["gateway"]["ip"], "lan_prefix": proposal["lan"]["prefix"]})
    return render(request, "network/wizard.html", {"form": form, "found": found, "problem": problem,
                                                   "proposal": proposal})
