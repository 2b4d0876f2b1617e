"""The event catalog as a tenant sees it: the shipped types plus its own."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from croupier.catalog import builtin_event_type, builtin_event_types
from croupier.domain.clock import Clock
from croupier.domain.errors import (
    EventTypeReadOnly,
    NotFound,
    SchemaViolation,
    UnknownEventType,
    ValidationFailed,
)
from croupier.domain.events import EventType
from croupier.services.ports import Store

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,199}$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_FORMATS = FormatChecker()
#: How long a publish may go on validating against a tenant type that another process
#: has just replaced. Changes made through this process apply at once.
TYPE_CACHE_MS = 5_000
_TYPE_CACHE_MAX = 10_000


class _Checker:
    """A type's schema, compiled twice.

    ``reference`` (jsonschema) decides, and words the error a publisher sees. ``fast``
    (compiled, about 30 times faster) answers first: when it finds the data valid, the
    reference would too, so the publish goes on; when it does not, the reference decides.
    That holds because ``fast`` checks formats with the reference's own functions and is
    otherwise no more lenient than it (a differential test in the suite guards this); a
    schema it cannot compile simply goes without.
    """

    def __init__(self, reference: Draft202012Validator, fast: Any) -> None:
        self.reference = reference
        self.fast = fast

    @classmethod
    def of(cls, schema: dict[str, Any]) -> _Checker:
        # An empty registry: a "$ref" is resolved inside the schema or not at all, and
        # nothing is ever fetched from the network (a tenant's schema is refused at PUT
        # unless it is self-contained, so the fast one never looks outside it either).
        reference = Draft202012Validator(schema, format_checker=_FORMATS, registry=Registry())
        try:
            fast = jsonschema_rs.validator_for(schema, validate_formats=True, formats=_FAST_FORMATS)
        except Exception:
            fast = None
        return cls(reference, fast)


def _format_check(name: str) -> Any:
    def conforms(value: Any) -> bool:
        return _FORMATS.conforms(value, name)

    return conforms


#: The formats the reference checks, with its own functions, for the fast validator.
_FAST_FORMATS = {name: _format_check(name) for name in _FORMATS.checkers}


class EventTypeService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        # Compiled validators, keyed by (tenant, name, version).
        self._validators: dict[tuple[str, str, str], _Checker] = {}
        # (tenant, name) -> (the tenant's type or None, when it was read): spares every
        # publish of a tenant type a read of the store.
        self._recent: dict[tuple[str, str], tuple[EventType | None, int]] = {}

    async def catalog(self, tenant_id: str) -> list[EventType]:
        own = await self.store.run(lambda uow: uow.event_types.all(tenant_id), write=False)
        return sorted([*builtin_event_types(), *own], key=lambda t: t.name)

    async def get(self, tenant_id: str, name: str) -> EventType:
        found = await self.find(tenant_id, name)
        if found is None:
            raise NotFound(f"no event type {name!r}")
        return found

    async def find(self, tenant_id: str, name: str) -> EventType | None:
        builtin = builtin_event_type(name)
        if builtin is not None:
            return builtin
        return await self.store.run(lambda uow: uow.event_types.get(tenant_id, name), write=False)

    async def put(
        self,
        tenant_id: str,
        name: str,
        *,
        schema: dict[str, Any],
        schema_version: str,
        description: str,
        core: bool = True,
    ) -> EventType:
        """Create or replace one of the tenant's own types; a type that is not ``core`` is
        paused while the delivery backlog is over its threshold."""
        if not _NAME.match(name):
            raise ValidationFailed(
                "name must start with a letter and use letters, digits, '.', '_' or '-'",
                field="name",
            )
        if builtin_event_type(name) is not None:
            raise EventTypeReadOnly(f"{name!r} is a shipped type and cannot be redefined")
        if not _SEMVER.match(schema_version):
            raise ValidationFailed(
                "schema_version must be MAJOR.MINOR.PATCH", field="schema_version"
            )
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            raise ValidationFailed(
                f"schema is not a valid JSON Schema: {exc.message}",
                field=f"schema.{where}" if where else "schema",
            ) from exc
        _check_references(schema)
        event_type = EventType(
            name=name,
            schema=schema,
            schema_version=schema_version,
            description=description,
            core=core,
        )
        now = self.clock.now_ms()
        await self.store.run(lambda uow: uow.event_types.upsert(tenant_id, event_type, now))
        self._recent.pop((tenant_id, name), None)
        return event_type

    async def validate(self, tenant_id: str, name: str, data: Any) -> EventType:
        """Check ``data`` against the type's schema; return the type it was checked against."""
        event_type = await self._find_recent(tenant_id, name)
        if event_type is None:
            raise UnknownEventType(f"unknown event type {name!r}", field="type")
        tenant_key = "" if event_type.builtin else tenant_id
        key = (tenant_key, name, event_type.schema_version)
        checker = self._validators.get(key)
        if checker is None or checker.reference.schema != event_type.schema:
            checker = self._validators[key] = _Checker.of(event_type.schema)
        if checker.fast is not None and checker.fast.is_valid(data):
            return event_type
        validator = checker.reference
        try:
            error = best_match(validator.iter_errors(data))
        except Unresolvable as exc:
            raise SchemaViolation(
                f"the schema of {name!r} has a reference that cannot be resolved: {exc}",
                field="type",
            ) from exc
        if error is not None:
            field = _field_of(error)
            raise SchemaViolation(f"{field}: {error.message}", field=field)
        return event_type

    async def _find_recent(self, tenant_id: str, name: str) -> EventType | None:
        """:meth:`find`, answered from what was read in the last :data:`TYPE_CACHE_MS`."""
        builtin = builtin_event_type(name)
        if builtin is not None:
            return builtin
        now = self.clock.now_ms()
        recent = self._recent.get((tenant_id, name))
        # A clock that stepped back must not stretch an entry's life.
        if recent is not None and recent[1] <= now < recent[1] + TYPE_CACHE_MS:
            return recent[0]
        found = await self.find(tenant_id, name)
        if len(self._recent) >= _TYPE_CACHE_MAX:
            self._recent.clear()
        self._recent[(tenant_id, name)] = (found, now)
        return found


def _check_references(schema: dict[str, Any]) -> None:
    """Every ``$ref`` must point inside the schema itself, and resolve."""
    resolver = Registry().resolver_with_root(
        Resource.from_contents(schema, default_specification=DRAFT202012)
    )
    for where, ref in _references(schema, "schema"):
        if not ref.startswith("#"):
            raise ValidationFailed(
                f"{where}: only references inside the schema (#...) are allowed", field=where
            )
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise ValidationFailed(f"{where}: {ref!r} points nowhere", field=where) from exc


def _references(node: Any, where: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                found.append((f"{where}.{key}", value))
            else:
                found.extend(_references(value, f"{where}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_references(value, f"{where}.{i}"))
    return found


def _field_of(error: ValidationError) -> str:
    path = ["data", *(str(p) for p in error.absolute_path)]
    if error.validator == "required" and isinstance(error.instance, dict):
        required: list[str] = list(error.validator_value)  # type: ignore[arg-type]
        missing = [r for r in required if r not in error.instance]
        if missing:
            path.append(str(missing[0]))
    return ".".join(path)
