"""The settings document, assembled from the console's models and back.

Each settings object in the database is one *section* of the box's settings
document (`appliance.box.settings`): a singleton (`gateway`) or an item of a
list (`dhcp.pools[2]`). A section model declares its `doc_path`, how its
fields map onto the document (`doc_fields`) and, for lists, `many = True`.
This module puts the sections together into the one document, loads a
document into the sections (restore, first run), and validates a change the
only way the box validates anything: by building the document with the
change in it and asking `settings_errors`. The errors that come back are keyed
by document path; `field_errors` turns the ones that belong to an object into
its model field names, so a form, the API and the CLI all show the same words.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import signals

from appliance.box.settings import NON_FIELD, VERSION, Settings, parse_settings, settings_errors, to_data

_SECTIONS: list[type["Section"]] = []


def register(cls):
    """Class decorator: the model is a section of the settings document."""
    _SECTIONS.append(cls)
    signals.post_save.connect(_changed, sender=cls, weak=False)
    signals.post_delete.connect(_changed, sender=cls, weak=False)
    return cls


# The document as the API serves it is cached in each worker process under
# the document's revision: building it is a dozen queries and a validation,
# and GET /api/system/settings/ is what automation polls.
_DATA: dict = {}


def _changed(sender, **kw) -> None:
    from django.db.models import F

    from appliance.web.core.models import DocumentRevision

    if not DocumentRevision.objects.filter(pk=1).update(n=F("n") + 1):
        DocumentRevision.objects.get_or_create(pk=1, defaults={"n": 1})


def revision() -> int:
    """The document's revision: one plain indexed read (through the ORM, building the query cost 5x running it)."""
    from django.db import connections, router

    from appliance.web.core.models import DocumentRevision

    db = router.db_for_read(DocumentRevision)
    conn = connections[db]
    sql = _REVISION_SQL.get(db)
    if sql is None:
        q = conn.ops.quote_name
        meta = DocumentRevision._meta
        sql = _REVISION_SQL[db] = (f"SELECT {q(meta.get_field('n').column)} FROM {q(meta.db_table)} "
                                   f"WHERE {q(meta.pk.column)} = %s")
    with conn.cursor() as cursor:
        cursor.execute(sql, [1])
        row = cursor.fetchone()
    return row[0] if row else 0


_REVISION_SQL: dict = {}


def cached_data() -> dict:
    """`to_data(current_settings())`, kept while the revision stays; raises SettingsError."""
    data = _DATA.get(revision())  # built from one snapshot at that revision (below): still the document
    if data is not None:
        return data
    with transaction.atomic():  # the revision and the sections from one snapshot
        rev = revision()
        data = _DATA.get(rev)
        if data is None:
            data = to_data(current_settings())
            _DATA.clear()
            _DATA[rev] = data
    return data


def _empty(value: Any) -> Any:
    return None if value == "" else value


class Section(models.Model):
    """A model that is one part of the settings document.

    `doc_fields` maps a path inside the section (`options.router`) to the
    model field that holds it (`router`); blank text means "not set" (None).
    """

    doc_path: str = ""
    doc_fields: dict[str, str] = {}
    many: bool = False

    class Meta:
        abstract = True

    # -- document <-> model -------------------------------------------------
    def to_doc(self) -> dict:
        out: dict = {}
        for path, field in self.doc_fields.items():
            value = _empty(getattr(self, field))
            if value is None and self._optional(field):
                continue
            _set(out, path, value)
        return out

    @classmethod
    def _optional(cls, field: str) -> bool:
        f = cls._meta.get_field(field)
        return f.null or f.blank

    @classmethod
    def from_doc(cls, data: dict, position: int = 0) -> "Section":
        obj = cls()
        for path, field in cls.doc_fields.items():
            value = _get(data, path)
            if value is None and cls._meta.get_field(field).blank and not cls._meta.get_field(field).null:
                value = ""
            if value is not None or cls._meta.get_field(field).null:
                setattr(obj, field, value)
        if cls.many:
            obj.position = position
        return obj

    # -- where this object sits in the document ------------------------------
    def doc_location(self) -> str:
        if not self.many:
            return self.doc_path
        items = list(type(self).ordered())
        for i, other in enumerate(items):
            if self.pk is not None and other.pk == self.pk:
                return f"{self.doc_path}[{i}]"
        return f"{self.doc_path}[{len(items)}]"

    @classmethod
    def ordered(cls):
        return cls.objects.order_by("position", "id") if cls.many else cls.objects.all()

    def __str__(self) -> str:
        return self.doc_location()

    # -- validation: the settings document's own rules -----------------------
    def clean(self):
        doc = build_document(replace=self)
        errors = settings_errors(doc)
        if errors:
            raise ValidationError(field_errors(self, errors, doc_before=build_document()))

    def validate_delete(self) -> None:
        """Raise ValidationError if the document without this object is invalid."""
        if not self.many:
            raise ValidationError({NON_FIELD: [f"{self.doc_path} is a required part of the settings"]})
        errors = settings_errors(build_document(remove=self))
        if errors:
            raise ValidationError(field_errors(self, errors, doc_before=build_document()))


class JsonSection(Section):
    """A section kept whole as one JSON value (a service's own settings document).

    Null means "the service's defaults"; errors anywhere inside it land on
    `config`, each naming its path.
    """

    doc_fields: dict[str, str] = {}
    config = models.JSONField(null=True, blank=True, help_text="the service's settings; null: its defaults")

    class Meta:
        abstract = True

    def to_doc(self):
        return self.config

    @classmethod
    def from_doc(cls, data, position=0):
        return cls(config=data or None)

    def clean(self):
        errors = settings_errors(build_document(replace=self))
        if errors:
            before = settings_errors(build_document())
            mine = [f"{p}: {m}" for p, ms in errors.items() for m in ms
                    if p.startswith(self.doc_path) or m not in before.get(p, [])]
            raise ValidationError({"config": mine or [f"{p}: {m}" for p, ms in errors.items() for m in ms]})


_SEG = re.compile(r"[.\[]")


def field_errors(obj: Section, errors: dict[str, list[str]], doc_before: dict | None = None) -> dict:
    """Document-path errors -> `{model_field | "__all__": [messages]}` for `obj`.

    Errors at the object's own path or inside it go to its fields; errors
    elsewhere that the change caused (they were not there before) are kept
    as non-field errors that name their path.
    """
    here = obj.doc_location()
    before = settings_errors(doc_before) if doc_before is not None else {}
    out: dict[str, list[str]] = {}
    for path, messages in errors.items():
        field = None
        if path == here:
            field = NON_FIELD
        elif path.startswith(here + ".") or (not here and path):
            rest = path[len(here) + 1:] if here else path
            for doc_field, model_field in sorted(obj.doc_fields.items(), key=lambda kv: -len(kv[0])):
                if rest == doc_field or rest.startswith(doc_field + ".") or rest.startswith(doc_field + "["):
                    field = model_field
                    break
        if field is not None:
            out.setdefault(field, []).extend(messages)
            continue
        new = [m for m in messages if m not in before.get(path, [])]
        if new:
            out.setdefault(NON_FIELD, []).extend(f"{path}: {m}" for m in new)
    return out or {NON_FIELD: [f"{p}: {m}" for p, ms in errors.items() for m in ms]}


def _set(out: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        out = out.setdefault(k, {})
    out[keys[-1]] = value


def _get(data: dict, path: str) -> Any:
    for k in path.split("."):
        if not isinstance(data, dict) or k not in data:
            return None
        data = data[k]
    return data


def _merge(out: dict, path: str, value: Any) -> None:
    keys = path.split(".") if path else []
    if not keys:
        out.update(value)
        return
    for k in keys[:-1]:
        out = out.setdefault(k, {})
    if isinstance(value, dict) and isinstance(out.get(keys[-1]), dict):
        out[keys[-1]].update(value)
    else:
        out[keys[-1]] = value


def build_document(replace: Section | None = None, remove: Section | None = None) -> dict:
    """The settings document as the database holds it (`replace`/`remove` one object first)."""
    doc: dict = {"version": VERSION}
    for cls in _SECTIONS:
        if cls.many:
            items = list(cls.ordered())
            if remove is not None and type(remove) is cls:
                items = [o for o in items if o.pk != remove.pk]
            if replace is not None and type(replace) is cls:
                if replace.pk is None or all(o.pk != replace.pk for o in items):
                    items.append(replace)
                else:
                    items = [replace if o.pk == replace.pk else o for o in items]
            _merge(doc, cls.doc_path, [o.to_doc() for o in items])
        else:
            obj = replace if replace is not None and type(replace) is cls else cls.objects.first()
            value = obj.to_doc() if obj is not None else None
            if value is not None:
                _merge(doc, cls.doc_path, value)
    return doc


def current_settings() -> Settings:
    """The validated document; raises SettingsError if the database holds none."""
    return parse_settings(build_document())


def normalized() -> dict:
    """The document in the settings module's own form (defaults filled), for diffs against files."""
    doc = build_document()
    try:
        return to_data(parse_settings(doc))
    except Exception:  # noqa: BLE001 - an invalid document is shown as it is
        return doc


def is_empty() -> bool:
    return not any(cls.objects.exists() for cls in _SECTIONS)


@transaction.atomic
def load_document(settings: Settings) -> None:
    """Replace every section with the content of a (validated) document."""
    data = to_data(settings)
    for cls in _SECTIONS:
        cls.objects.all().delete()
        value = _get(data, cls.doc_path) if cls.doc_path else data
        if cls.many:
            for i, item in enumerate(value or []):
                cls.from_doc(item, i).save()
        else:
            cls.from_doc(value if value is not None else {}).save()


def ensure_document(default: Settings | Callable | None = None) -> bool:
    """Seed an empty database (from the box's applied settings, else `default`); True if seeded."""
    if not is_empty():
        return False
    settings = default() if callable(default) else default
    if settings is None:
        return False
    load_document(settings)
    return True


def paths_of(objs: Iterable[Section]) -> list[str]:
    return [o.doc_location() for o in objs]

