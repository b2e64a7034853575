from django import forms

from appliance.web.dns import models


class DnsServiceForm(forms.ModelForm):
    class Meta:
        model = models.DnsService
        fields = ["config"]
