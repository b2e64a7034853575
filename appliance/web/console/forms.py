from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password


class SetupForm(forms.Form):
    """The first visit: create the admin account (there is no default password), with the setup code."""

    code = forms.CharField(max_length=40, label="Setup code", widget=forms.TextInput(attrs={"autocomplete": "off"}),
                           help_text="shown on the box's own screen and serial console (and printed by make demo)")
    username = forms.CharField(max_length=150, initial="admin")
    password = forms.CharField(widget=forms.PasswordInput, min_length=10)
    password2 = forms.CharField(widget=forms.PasswordInput, label="Password again")

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("password") != data.get("password2"):
            self.add_error("password2", "the two passwords differ")
        elif data.get("password"):
            try:
                # The user as it will be: Django's rules also refuse a password like the user name.
                validate_password(data["password"], get_user_model()(username=data.get("username", "")))
            except forms.ValidationError as e:
                self.add_error("password", e)
        return data


class LoginForm(forms.Form):
    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput)


class TotpForm(forms.Form):
    code = forms.CharField(max_length=8, label="Code from your authenticator app")
