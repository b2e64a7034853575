"""What every settings app shares: forms, console views, serializers, API views.

An app that owns a section of the settings document declares its model
(a `document.Section`), then subclasses these with `model = ...` and gets a
form, list/edit/delete pages and a REST endpoint that all validate through
the model's `clean()` (the settings document's own rules) and write an
audit entry with the document's diff.
"""
from __future__ import annotations

from collections.abc import Mapping

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import ValidationError

from appliance.web import apischema, document
from appliance.web.audit.log import record_change

# ---------------------------------------------------------------- saving


@transaction.atomic
def save_section(obj: document.Section, user, action: str | None = None) -> document.Section:
    before = document.build_document()
    action = action or ("update" if obj.pk else "create")
    if obj.many and obj.pk is None and obj.position == 0:
        last = type(obj).objects.order_by("-position").first()
        obj.position = (last.position + 1) if last else 0
    obj.save()
    record_change(user, action, obj.doc_location(), before, document.build_document())
    return obj


@transaction.atomic
def delete_section(obj: document.Section, user) -> None:
    obj.validate_delete()
    before = document.build_document()
    where = obj.doc_location()
    obj.delete()
    record_change(user, "delete", where, before, document.build_document())


# ---------------------------------------------------------------- forms


class ListField(forms.CharField):
    """A list typed as text: '22, 80, 443' <-> [22, 80, 443]; blank is `empty`."""

    def __init__(self, *args, empty=(), **kw):
        kw.setdefault("required", False)
        self.empty = empty
        super().__init__(*args, **kw)

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        if not text.strip():
            return None if self.empty is None else list(self.empty)
        return [int(v) if v.isdigit() else v for v in text.replace(",", " ").split()]


class SectionForm(forms.ModelForm):
    """A ModelForm: `full_clean()` runs the model's `clean()`, so errors land on fields."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        for name, field in self.fields.items():
            if isinstance(field, forms.JSONField):
                model_field = self._meta.model._meta.get_field(name)
                self.fields[name] = ListField(label=field.label, help_text=model_field.help_text,
                                              empty=None if model_field.null else ())


def section_form(model, fields=None):
    fields = fields or [f for f in model.doc_fields.values()]
    return forms.modelform_factory(model, form=SectionForm, fields=fields)


# ---------------------------------------------------------------- console views


class SectionListView(LoginRequiredMixin, View):
    """Every object of a list section, with add/edit/delete links."""

    model = None
    template_name = "console/section_list.html"
    title = ""
    url_base = ""  # "dhcp:pool" -> dhcp:pool_add, dhcp:pool_edit, dhcp:pool_delete

    def get(self, request):
        objects = list(self.model.ordered())
        columns = list(self.model.doc_fields.values())
        rows = [(o, [getattr(o, c) for c in columns]) for o in objects]
        return render(request, self.template_name, {
            "title": self.title, "columns": columns, "rows": rows, "url_base": self.url_base})


class SectionEditView(LoginRequiredMixin, View):
    """Add or edit one object; a singleton section edits its only object."""

    model = None
    form_class = None
    template_name = "console/section_form.html"
    title = ""
    success_url = ""

    def get_object(self, pk):
        if not self.model.many:
            obj = self.model.objects.first()
            if obj is None:
                raise Http404(f"{self.model.doc_path} is not set yet; run the setup wizard")
            return obj
        return get_object_or_404(self.model, pk=pk) if pk is not None else self.model()

    def get_form_class(self):
        return self.form_class or section_form(self.model)

    def get(self, request, pk=None):
        obj = self.get_object(pk)
        return render(request, self.template_name, {"form": self.get_form_class()(instance=obj),
                                                    "title": self.title, "object": obj})

    def post(self, request, pk=None):
        obj = self.get_object(pk)
        form = self.get_form_class()(request.POST, instance=obj)
        if form.is_valid():
            obj = save_section(form.save(commit=False), request.user)
            messages.success(request, f"Saved {obj.doc_location()}. Apply to make it live.")
            return redirect(self.success_url or request.path)
        return render(request, self.template_name, {"form": form, "title": self.title, "object": obj},
                      status=400)


class SectionDeleteView(LoginRequiredMixin, View):
    model = None
    success_url = ""

    def post(self, request, pk):
        obj = get_object_or_404(self.model, pk=pk)
        where = obj.doc_location()
        try:
            delete_section(obj, request.user)
            messages.success(request, f"Deleted {where}. Apply to make it live.")
        except DjangoValidationError as e:
            for m in e.messages:
                messages.error(request, f"{where} not deleted: {m}")
        return redirect(self.success_url)


# ---------------------------------------------------------------- API


def drf_errors(e: DjangoValidationError) -> dict:
    """Django's `{field: [...], "__all__": [...]}` -> DRF's keys."""
    data = e.message_dict if hasattr(e, "error_dict") else {"__all__": e.messages}
    return {("non_field_errors" if k == "__all__" else k): v for k, v in data.items()}


class SectionSerializer(serializers.ModelSerializer):
    """Checks the body against the section's schema first (`apischema`: types, formats, ranges,
    never coerced; 400), then the settings document's own rules as the form does, by the model's
    `full_clean()` (409: the body was well formed, the settings refuse it)."""

    def body_schema(self) -> dict:
        model = self.Meta.model
        writable = {name: f for name, f in self.fields.items() if not f.read_only}
        properties = {name: apischema.section_field_schema(model, name) or {} for name in writable}
        required = [] if self.partial else [name for name, f in writable.items() if f.required]
        return apischema.object_schema(properties, required)

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            errors = apischema.body_errors(self.body_schema(), dict(data), by_field=True)
            if errors:
                raise ValidationError(errors)
        return super().to_internal_value(data)

    def validate(self, attrs):
        nulls = {k: ["may not be null"] for k, v in attrs.items()
                 if v is None and not self.Meta.model._meta.get_field(k).null}
        if nulls:
            raise ValidationError(nulls)
        return attrs

    def _checked(self, obj):
        # Here, not in validate(): DRF turns whatever validate() raises into a 400.
        try:
            obj.full_clean(exclude=["position"])
        except DjangoValidationError as e:
            raise apischema.RuleConflict(drf_errors(e)) from None
        return obj

    def create(self, validated_data):
        obj = self._checked(self.Meta.model(**validated_data))
        return save_section(obj, self.context["request"].user)

    def update(self, instance, validated_data):
        for k, v in validated_data.items():
            setattr(instance, k, v)
        return save_section(self._checked(instance), self.context["request"].user)


def section_serializer(model_cls, extra_read_only=()):
    fields = ["id", *model_cls.doc_fields.values()]
    if model_cls.many:
        fields.append("position")
    meta = type("Meta", (), {"model": model_cls, "fields": fields,
                             "read_only_fields": ["id", "position", *extra_read_only]})
    return type(f"{model_cls.__name__}Serializer", (SectionSerializer,),
                {"Meta": meta, "__doc__": section_doc(model_cls)})


def section_doc(model_cls) -> str:
    where = f"an item of `{model_cls.doc_path}`" if model_cls.many else f"`{model_cls.doc_path}`"
    return f"{where} of the settings document (GET /api/system/settings/ shows it whole)."


class SectionViewSet(viewsets.ModelViewSet):
    """CRUD for a list section (`/api/dhcp/pools/`)."""

    def get_queryset(self):
        return self.serializer_class.Meta.model.ordered()

    def perform_destroy(self, instance):
        try:
            delete_section(instance, self.request.user)
        except DjangoValidationError as e:
            raise apischema.RuleConflict(drf_errors(e)) from None


class SingletonViewSet(mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """GET/PUT/PATCH for a singleton section (`/api/network/gateway/`)."""

    def get_queryset(self):
        return self.serializer_class.Meta.model.objects.all()

    def get_object(self):
        obj = self.get_queryset().first()
        if obj is None:
            raise Http404("not set yet")
        self.check_object_permissions(self.request, obj)
        return obj


def singleton_routes(viewset):
    return viewset.as_view({"get": "retrieve", "put": "update", "patch": "partial_update"})
