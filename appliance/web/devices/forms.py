from django import forms

from rest_framework import serializers

from appliance.services.devices.policy import (
    BUDGET_MAX, DAYS, GROUP_MAX, PERIODS, Budget, PolicyError, Schedule, check_group, hhmm,
)
from appliance.web.devices.api.serializers import NAME_MAX, check_name

MB = 1_000_000
TIME_INPUT = forms.TimeInput(attrs={"type": "time"}, format="%H:%M")


class RenameForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, required=False, strip=True,
                           help_text="empty: the name the device gave DHCP (or its static lease's)")

    def clean_name(self):
        try:
            return check_name(self.cleaned_data["name"])
        except serializers.ValidationError:
            raise forms.ValidationError("the name has a control character") from None


class ScheduleForm(forms.Form):
    """One schedule ("off 21:00-07:00 starting Mon-Fri"); no day ticked: none. More than one
    schedule per device or group is the API's (`schedules`); this form edits the first."""

    days = forms.MultipleChoiceField(choices=[(d, d.capitalize()) for d in DAYS], required=False,
                                     widget=forms.CheckboxSelectMultiple,
                                     help_text="off on periods starting on these days (none: no schedule)")
    start = forms.TimeField(required=False, widget=TIME_INPUT, input_formats=["%H:%M"], help_text="off from")
    end = forms.TimeField(required=False, widget=TIME_INPUT, input_formats=["%H:%M"],
                          help_text="until (before the start: the next morning; the same: the whole day)")

    def __init__(self, *args, schedules=(), **kw):
        first = schedules[0] if schedules else None
        kw.setdefault("initial", {}).update(
            {"days": list(first.days), "start": hhmm(first.start), "end": hhmm(first.end)} if first else {})
        self.rest = tuple(schedules[1:])
        super().__init__(*args, **kw)

    def schedules(self) -> tuple[Schedule, ...]:
        c = self.cleaned_data
        if not c.get("days"):
            return self.rest
        return (Schedule(tuple(d for d in DAYS if d in c["days"]), c["start"].hour * 60 + c["start"].minute,
                         c["end"].hour * 60 + c["end"].minute), *self.rest)

    def clean(self):
        c = super().clean()
        if c.get("days"):
            for f in ("start", "end"):
                if c.get(f) is None and f not in self.errors:
                    self.add_error(f, "a time of day (HH:MM) for the schedule")
        return c


class DevicePolicyForm(ScheduleForm):
    group = forms.CharField(max_length=GROUP_MAX, required=False, strip=True,
                            help_text="e.g. Kids: the group's schedules apply to the device too (empty: none)")
    budget_mb = forms.IntegerField(required=False, min_value=1, max_value=BUDGET_MAX // MB, label="Data budget (MB)",
                                   help_text="an alert once per period when the device uses more, both ways "
                                             "(empty: none)")
    budget_period = forms.ChoiceField(choices=[(p, f"per {p}") for p in PERIODS], required=False, initial="day",
                                      label="Budget period")
    field_order = ["group", "days", "start", "end", "budget_mb", "budget_period"]

    def __init__(self, *args, policy=None, **kw):
        initial = kw.setdefault("initial", {})
        if policy is not None:
            initial["group"] = policy.group
            if policy.budget:
                initial.update(budget_mb=max(1, policy.budget.bytes // MB), budget_period=policy.budget.period)
        super().__init__(*args, schedules=policy.schedules if policy else (), **kw)

    def clean_group(self):
        try:
            return check_group(self.cleaned_data["group"], "group")
        except PolicyError as e:
            raise forms.ValidationError(e.message) from None

    def budget(self) -> Budget | None:
        mb = self.cleaned_data.get("budget_mb")
        return Budget(mb * MB, self.cleaned_data.get("budget_period") or "day") if mb else None
