from django import forms

from rest_framework import serializers

from appliance.web.devices.api.serializers import NAME_MAX, check_name


class RenameForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, required=False, strip=True,
                           help_text="empty: the name the device gave DHCP (or its static lease's)")

    def clean_name(self):
        try:
            return check_name(self.cleaned_data["name"])
        except serializers.ValidationError:
            raise forms.ValidationError("the name has a control character") from None
