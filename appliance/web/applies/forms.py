from django import forms


class ApplyForm(forms.Form):
    """Apply the console's settings document (no fields: the document is the input)."""
