from django import forms

from appliance.web.network import models
from appliance.web.sections import section_form

PortsForm = section_form(models.Ports)
GatewayForm = section_form(models.Gateway)
LanForm = section_form(models.Lan)
AdminForm = section_form(models.Admin)
VProxyForm = section_form(models.VProxy)
Ipv6Form = section_form(models.Ipv6)
FailsafeForm = section_form(models.Failsafe)


class WizardForm(forms.Form):
    """The setup wizard's one question set: which NIC goes where, and the modem."""

    uplink = forms.ChoiceField(help_text="the port cabled to the modem")
    downlink = forms.ChoiceField(help_text="the port cabled to the home switch")
    gateway_ip = forms.CharField(label="Modem address")
    lan_prefix = forms.CharField(label="LAN")

    def __init__(self, *args, nics=(), **kw):
        super().__init__(*args, **kw)
        choices = [(n, n) for n in nics]
        self.fields["uplink"].choices = choices
        self.fields["downlink"].choices = choices
