"""The typed models of event data, checked against the catalog's JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from croupier.receiver import Event
from croupier.receiver import models as models_module
from croupier.receiver.models import (
    MODELS,
    DeliveryDead,
    EndpointDisabled,
    EventData,
    PrizePayoutCreated,
    RoundCompleted,
    WalletWinCredited,
    parse_data,
    typed,
)
from tests.receiver.support import EVENT_ID, NOW

SCHEMA_DIR = Path(__file__).parents[2] / "src" / "croupier" / "catalog" / "schemas"
SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def event_of(event_type: str, data: dict[str, Any]) -> Event:
    return Event(
        id=EVENT_ID,
        type=event_type,
        data=data,
        timestamp=NOW,
        occurred_at=None,
        schema_version="1.0.0",
        attempt=1,
        format="envelope",
        body={},
    )


def wire_names(model: type[BaseModel]) -> dict[str, str]:
    """Wire name (alias) -> Python attribute name."""
    return {field.alias or name: name for name, field in model.model_fields.items()}


def nested_model(model: type[BaseModel], attribute: str) -> type[BaseModel]:
    annotation = model.model_fields[attribute].annotation
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise AssertionError(f"{model.__name__}.{attribute} is not a nested model")


def assert_matches(model: type[BaseModel], schema: dict[str, Any], defs: dict[str, Any]) -> None:
    names = wire_names(model)
    assert set(names) == set(schema["properties"]), model.__name__
    required = {alias for alias, name in names.items() if model.model_fields[name].is_required()}
    assert required == set(schema.get("required", [])), model.__name__
    for prop, sub in schema["properties"].items():
        if "$ref" in sub:
            sub = defs[sub["$ref"].rsplit("/", 1)[-1]]
        if "properties" in sub:
            assert_matches(nested_model(model, names[prop]), sub, defs)


def literal_values(annotation: Any) -> set[Any]:
    """The values of every ``Literal`` inside an annotation (through Optional, Annotated)."""
    if get_origin(annotation) is Literal:
        return set(get_args(annotation))
    return {value for arg in get_args(annotation) for value in literal_values(arg)}


def test_there_is_one_schema_file_per_model() -> None:
    assert len(SCHEMA_FILES) == 25
    assert {load(path)["name"] for path in SCHEMA_FILES} == set(MODELS)


def test_every_model_is_exported_by_name() -> None:
    for model in MODELS.values():
        assert model.__name__ in models_module.__all__, model.__name__
        assert getattr(models_module, model.__name__) is model


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_each_model_has_its_schemas_properties_and_required_fields(path: Path) -> None:
    document = load(path)
    model = MODELS[document["name"]]
    assert document["name"] == model.EVENT_TYPE
    assert_matches(model, document["schema"], document["schema"].get("$defs", {}))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_each_enumerated_field_accepts_only_values_its_schema_allows(path: Path) -> None:
    # A subset, not equality: a model may narrow what its schema's conditionals narrow
    # (each prize payout type fixes its own status).
    document = load(path)
    model = MODELS[document["name"]]
    names = wire_names(model)
    for prop, sub in document["schema"]["properties"].items():
        allowed = set(sub.get("enum", [])) | ({sub["const"]} if "const" in sub else set())
        accepted = literal_values(model.model_fields[names[prop]].annotation)
        if allowed:
            assert accepted, (model.__name__, prop)
        assert accepted <= allowed, (model.__name__, prop)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_each_schema_example_parses_into_its_model(path: Path) -> None:
    document = load(path)
    assert document["examples"]
    for example in document["examples"]:
        data = parse_data(event_of(document["name"], example))
        assert isinstance(data, MODELS[document["name"]])
        assert data.model_dump(by_alias=True, exclude_unset=True, mode="json").keys() == (
            example.keys()
        )


def test_fields_read_as_typed_snake_case_attributes() -> None:
    example = load(SCHEMA_DIR / "wallet.win_credited.json")["examples"][0]
    credited = typed(event_of("wallet.win_credited", example), WalletWinCredited)
    assert credited.id == EVENT_ID
    assert credited.type == "wallet.win_credited"
    assert credited.data.amount == 14.6
    assert credited.data.transaction_id == "tx_w001"
    assert credited.data.created_at is not None
    assert credited.data.created_at.year == 2025


def test_nested_objects_become_models_too() -> None:
    example = load(SCHEMA_DIR / "round.completed.json")["examples"][0]
    completed = typed(event_of("round.completed", example), RoundCompleted)
    assert completed.data.win_amount == example["winAmount"]
    assert completed.data.provably_fair.nonce == example["provablyFair"]["nonce"]


def test_unknown_fields_are_kept_so_new_fields_do_not_break_receivers() -> None:
    example = load(SCHEMA_DIR / "wallet.win_credited.json")["examples"][0]
    data = parse_data(event_of("wallet.win_credited", {**example, "jurisdiction": "MT"}))
    assert data is not None
    assert data.model_extra == {"jurisdiction": "MT"}


def test_an_unknown_event_type_parses_to_none() -> None:
    assert parse_data(event_of("custom.thing", {"a": 1})) is None


def test_typed_refuses_an_event_of_another_type() -> None:
    with pytest.raises(ValueError, match=r"'round\.completed' is not 'wallet\.win_credited'"):
        typed(event_of("round.completed", {}), WalletWinCredited)


def test_data_that_breaks_its_schema_raises_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        parse_data(event_of("wallet.win_credited", {"transactionId": "tx"}))


def test_flat_format_events_get_their_event_type_back_for_the_models_that_require_it() -> None:
    example = load(SCHEMA_DIR / "PRIZE_PAYOUT_CREATED.json")["examples"][0]
    flat = {k: v for k, v in example.items() if k != "event_type"}
    payout = typed(event_of("PRIZE_PAYOUT_CREATED", flat), PrizePayoutCreated)
    assert payout.data.event_type == "PRIZE_PAYOUT_CREATED"
    assert str(payout.data.request_id) == example["request_id"]


def test_a_dead_delivery_names_the_type_of_the_event_it_carried() -> None:
    example = load(SCHEMA_DIR / "delivery.dead.json")["examples"][0]
    dead = typed(event_of("delivery.dead", example), DeliveryDead)
    assert dead.data.dead_event_type == "round.completed"
    assert dead.data.attempts == 8
    assert dead.data.last_status_code == 503
    assert dead.data.dead_at.year == 2026


def test_a_flat_dead_delivery_keeps_the_dead_events_type_beside_its_own() -> None:
    # The flat format adds event_type = "delivery.dead"; the dead event's type has a field
    # of its own, so nothing is hidden.
    example = load(SCHEMA_DIR / "delivery.dead.json")["examples"][0]
    flat = {**example, "event_type": "delivery.dead"}
    dead = typed(event_of("delivery.dead", flat), DeliveryDead)
    assert dead.data.dead_event_type == "round.completed"


def test_a_disabled_endpoint_says_why_with_a_known_reason() -> None:
    example = load(SCHEMA_DIR / "endpoint.disabled.json")["examples"][0]
    disabled = typed(event_of("endpoint.disabled", example), EndpointDisabled)
    assert disabled.data.reason == "failing"
    assert disabled.data.failing_since is not None
    assert disabled.data.failing_since < disabled.data.disabled_at
    gone = {**example, "reason": "gone", "failing_since": None}
    assert typed(event_of("endpoint.disabled", gone), EndpointDisabled).data.failing_since is None
    with pytest.raises(ValidationError, match="reason"):
        parse_data(event_of("endpoint.disabled", {**example, "reason": "tired"}))


@pytest.mark.parametrize(
    ("prize", "missing"),
    [
        ({"prize_type": "cash"}, "amount"),
        ({"prize_type": "free_spins", "amount": 10}, "game_id"),
        ({"prize_type": "deposit_bonus"}, "percentage_value"),
        ({"prize_type": "catalog_item", "item": "Phone"}, "value"),
    ],
)
def test_prize_types_require_the_fields_their_schema_makes_conditional(
    prize: dict[str, Any], missing: str
) -> None:
    base = {
        "campaign_id": "c1",
        "request_id": "550e8400-e29b-41d4-a716-446655440000",
        "player_id": "p1",
        "player_currency": "EUR",
        "event_type": "PRIZE_PAYOUT_CREATED",
        "status": "TODO",
    }
    with pytest.raises(ValidationError, match=missing):
        PrizePayoutCreated.model_validate({**base, **prize})


def test_a_round_refund_needs_its_currency() -> None:
    example = load(SCHEMA_DIR / "round.cancelled.json")["examples"][0]
    without_currency = {k: v for k, v in example.items() if k != "currency"}
    with pytest.raises(ValidationError, match="refundAmount requires currency"):
        parse_data(event_of("round.cancelled", {**without_currency, "refundAmount": 2.0}))


def test_every_model_is_an_event_data() -> None:
    assert all(issubclass(model, EventData) for model in MODELS.values())
