"""The event types croupier ships, each with a JSON Schema for its ``data``.

One JSON file per type lives in ``schemas/``, named after the type. 23 of the 25 types come
from three sources, and their names and payload fields are kept exactly as those sources
define them, so receivers already written against them keep working:

* the provider guide: 16 game, financial, player and system types in camelCase
  (``round.completed`` ... ``system.game_version_updated``), 5 of them subscribed by
  default (:data:`DEFAULT_SUBSCRIPTIONS`) and 11 opt-in;
* the prize-campaign guide: ``PRIZE_PAYOUT_CREATED``, ``PRIZE_PAYOUT_SUCCEEDED``,
  ``PRIZE_PAYOUT_FAILED``, ``PLAYER_OPTED_IN`` and ``PLAYER_OPTED_OUT``, flat snake_case
  payloads whose fields depend on the prize type;
* the integration-patterns article: ``bet.settled`` and ``wallet.credit.ok``, with money as
  ``{"minor_units": int, "currency": str}``.

Two more are croupier's own: ``delivery.dead`` and ``endpoint.disabled``, published to a
tenant's own endpoints when a delivery runs out of retries or an endpoint is disabled.
A type with ``"core": false`` is paused while the delivery backlog is over its threshold.

Tenants add their own types next to these through the API; this module only knows the
shipped ones.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, TypeVar

from croupier.domain.events import EventType

__all__ = ["DEFAULT_SUBSCRIPTIONS", "builtin_event_type", "builtin_event_types"]

#: Types every new endpoint receives unless it chooses otherwise, in the provider guide's order.
DEFAULT_SUBSCRIPTIONS: tuple[str, ...] = (
    "round.completed",
    "wallet.deposit_confirmed",
    "wallet.withdrawal_completed",
    "player.limit_reached",
    "system.maintenance",
)

_SUFFIX = ".json"

_T = TypeVar("_T")


@functools.cache
def builtin_event_types() -> tuple[EventType, ...]:
    """Every shipped event type, sorted by name; read once from the package data."""
    directory = files("croupier.catalog") / "schemas"
    types = [
        _load(entry)
        for entry in directory.iterdir()
        if entry.is_file() and entry.name.endswith(_SUFFIX)
    ]
    return tuple(sorted(types, key=lambda t: t.name))


def builtin_event_type(name: str) -> EventType | None:
    """The shipped event type called ``name``, or None when croupier ships no such type."""
    return _by_name().get(name)


@functools.cache
def _by_name() -> dict[str, EventType]:
    return {t.name: t for t in builtin_event_types()}


def _load(entry: Traversable) -> EventType:
    raw: Any = json.loads(entry.read_text(encoding="utf-8"))
    where = f"catalog file {entry.name}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object")
    name = _field(raw, "name", str, where)
    if f"{name}{_SUFFIX}" != entry.name:
        raise ValueError(f"{where}: declares name {name!r}, which does not match the file name")
    examples = _field(raw, "examples", list, where)
    if not all(isinstance(example, dict) for example in examples):
        raise ValueError(f"{where}: every example must be a JSON object")
    return EventType(
        name=name,
        schema=_field(raw, "schema", dict, where),
        schema_version=_field(raw, "schema_version", str, where),
        description=_field(raw, "description", str, where),
        category=_field(raw, "category", str, where),
        default_subscription=_field(raw, "default_subscription", bool, where),
        builtin=True,
        core=_field(raw, "core", bool, where) if "core" in raw else True,
        examples=tuple(examples),
    )


def _field(raw: dict[str, Any], key: str, kind: type[_T], where: str) -> _T:
    value = raw.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{where}: {key!r} must be a {kind.__name__}")
    return value
