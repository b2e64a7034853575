from django import forms

from appliance.web.relay import models


class RelayServiceForm(forms.ModelForm):
    class Meta:
        model = models.RelayService
        fields = ["config"]
