from django import forms

from appliance.web.devices.api.serializers import NAME_MAX


class RenameForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, required=False, strip=True,
                           help_text="empty: the name the device gave DHCP (or its static lease's)")

    def clean_name(self):
        value = self.cleaned_data["name"]
        if any(not ch.isprintable() for ch in value):
            raise forms.ValidationError("the name has a control character")
        return value
