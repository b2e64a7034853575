from django import forms

from appliance.web.system.models import SshKey


class SshKeyForm(forms.ModelForm):
    class Meta:
        model = SshKey
        fields = ["name", "key"]
        widgets = {"key": forms.Textarea(attrs={"rows": 3, "cols": 90})}


class RestoreForm(forms.Form):
    file = forms.FileField(help_text="a settings document (JSON or YAML), as Backup downloads it")
