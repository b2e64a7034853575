"""The audit log is read-only: only a filter form."""
from django import forms


class AuditFilterForm(forms.Form):
    q = forms.CharField(required=False, label="user, action or path")
