"""Generic API tests, NetBox style: a settings object's test declares `url` and its data only.

Every endpoint is checked for: anonymous refused, read, write through the
document's validation, field-keyed errors for bad input with nothing saved
or applied (400 for what breaks the schema, 409 for what the settings' rules
refuse in a body the schema allows), and an audit entry for each change.
"""
from rest_framework.test import APIClient

from appliance.web import document
from appliance.web.applies.models import ApplyRecord
from appliance.web.audit.models import AuditEntry
from tests.support import webfakes as fakes


def _nothing_applied():
    assert ApplyRecord.objects.count() == 0
    assert fakes.BOX.applied_settings() is None


class AnonymousRefused:
    url = ""
    methods = ("get",)

    def test_anonymous_is_refused(self, doc):
        c = APIClient()
        for m in self.methods:
            r = getattr(c, m)(self.url, {}, format="json")
            assert r.status_code in (401, 403), (m, self.url, r.status_code)


class SingletonAPITests(AnonymousRefused):
    """A singleton section: GET, PATCH good data, PATCH bad data -> errors keyed by field."""

    model = None
    update_data: dict = {}
    bad_data: dict = {}  # {field: a value the schema refuses}; 400, the error under that field
    conflicting_data: dict = {}  # {field: a value the schema allows and the settings refuse}; 409
    methods = ("get", "put", "patch")

    def test_get(self, api):
        r = api.get(self.url)
        assert r.status_code == 200
        obj = self.model.objects.first()
        for field in self.model.doc_fields.values():
            assert field in r.data
        assert r.data["id"] == obj.pk

    def test_update(self, api):
        r = api.patch(self.url, self.update_data, format="json")
        assert r.status_code == 200, r.data
        obj = self.model.objects.first()
        for k, v in self.update_data.items():
            assert getattr(obj, k) == v
        assert document.current_settings()  # the document stays valid
        assert AuditEntry.objects.filter(action="update", target=self.model.doc_path).exists()
        assert ApplyRecord.objects.count() == 0, "saving is not applying"

    def test_bad_input_returns_field_keyed_errors_and_changes_nothing(self, api):
        before = document.build_document()
        for status, data in ((400, self.bad_data), (409, self.conflicting_data)):
            for field, value in data.items():
                r = api.patch(self.url, {field: value}, format="json")
                assert r.status_code == status, (field, r.data)
                assert field in r.data, (field, r.data)
                assert all(isinstance(m, str) and m for m in r.data[field])
        assert document.build_document() == before
        assert not AuditEntry.objects.exists()
        _nothing_applied()


class ListAPITests(AnonymousRefused):
    """A list section: list, create, get, update, delete; bad input keyed by field."""

    model = None
    create_data: dict = {}
    update_data: dict = {}
    bad_data: dict = {}
    conflicting_data: dict = {}
    methods = ("get", "post")

    def test_list(self, api):
        r = api.get(self.url)
        assert r.status_code == 200
        assert len(r.data) == self.model.objects.count()

    def test_create_get_update_delete(self, api):
        n = self.model.objects.count()
        r = api.post(self.url, self.create_data, format="json")
        assert r.status_code == 201, r.data
        pk = r.data["id"]
        assert self.model.objects.count() == n + 1
        r = api.get(f"{self.url}{pk}/")
        assert r.status_code == 200
        for k, v in self.create_data.items():
            assert r.data[k] == v
        r = api.patch(f"{self.url}{pk}/", self.update_data, format="json")
        assert r.status_code == 200, r.data
        r = api.delete(f"{self.url}{pk}/")
        assert r.status_code == 204
        assert self.model.objects.count() == n
        actions = list(AuditEntry.objects.order_by("id").values_list("action", flat=True))
        assert actions == ["create", "update", "delete"]
        assert "+" in AuditEntry.objects.get(action="create").diff
        document.current_settings()

    def test_detail_anonymous_is_refused(self, api):
        pk = self.model.objects.first().pk if self.model.objects.exists() else 1
        c = APIClient()
        for m in ("get", "put", "patch", "delete"):
            assert getattr(c, m)(f"{self.url}{pk}/").status_code in (401, 403)

    def test_bad_input_returns_field_keyed_errors_and_changes_nothing(self, api):
        before = document.build_document()
        for status, data in ((400, self.bad_data), (409, self.conflicting_data)):
            for field, value in data.items():
                r = api.post(self.url, {**self.create_data, field: value}, format="json")
                assert r.status_code == status, (field, r.data)
                assert field in r.data, (field, r.data)
        assert document.build_document() == before
        assert not AuditEntry.objects.exists()
        _nothing_applied()
