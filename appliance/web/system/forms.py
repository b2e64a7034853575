from django import forms
from django.conf import settings as django_settings

from appliance.web.sections import section_form
from appliance.web.system.models import Alerts, SshKey


class SshKeyForm(forms.ModelForm):
    class Meta:
        model = SshKey
        fields = ["name", "key"]
        widgets = {"key": forms.Textarea(attrs={"rows": 3, "cols": 90})}


class RestoreForm(forms.Form):
    file = forms.FileField(help_text="a settings document (JSON or YAML), as Backup downloads it")

    def clean_file(self):
        f = self.cleaned_data["file"]
        limit = django_settings.APPLIANCE_RESTORE_MAX_BYTES
        if f.size > limit:
            raise forms.ValidationError(f"the file is {f.size} bytes; a settings document is at most {limit}")
        return f


AlertsForm = section_form(Alerts)
