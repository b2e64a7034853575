from django import forms

from appliance.web.sections import section_form
from appliance.web.switch import models

CustomFlowsForm = section_form(models.CustomFlows)


class TraceForm(forms.Form):
    flow = forms.CharField(label="Packet", initial="in_port=downlink,udp,nw_dst=192.168.1.1,tp_dst=53",
                           widget=forms.TextInput(attrs={"size": 70}))
