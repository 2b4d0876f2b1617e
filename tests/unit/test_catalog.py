"""The shipped event catalog: names, defaults, schemas and examples."""

from __future__ import annotations

import copy
import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from croupier.catalog import DEFAULT_SUBSCRIPTIONS, _load, builtin_event_type, builtin_event_types
from croupier.domain.events import EventType

PROVIDER_GUIDE_TYPES = (
    "round.completed",
    "round.cancelled",
    "round.jackpot_won",
    "wallet.bet_placed",
    "wallet.win_credited",
    "wallet.rollback",
    "wallet.deposit_confirmed",
    "wallet.withdrawal_completed",
    "wallet.withdrawal_failed",
    "player.created",
    "player.suspended",
    "player.self_excluded",
    "player.limit_reached",
    "system.maintenance",
    "system.incident",
    "system.game_version_updated",
)
PRIZE_CAMPAIGN_TYPES = (
    "PRIZE_PAYOUT_CREATED",
    "PRIZE_PAYOUT_SUCCEEDED",
    "PRIZE_PAYOUT_FAILED",
    "PLAYER_OPTED_IN",
    "PLAYER_OPTED_OUT",
)
ARTICLE_TYPES = ("bet.settled", "wallet.credit.ok")
CROUPIER_TYPES = ("delivery.dead", "endpoint.disabled")
NON_CORE_TYPES = {"PLAYER_OPTED_IN", "PLAYER_OPTED_OUT", "system.game_version_updated"}
CATEGORIES = {"game", "financial", "player", "system", "prize", "campaign"}
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
ALL_TYPES = builtin_event_types()


def _type(name: str) -> EventType:
    event_type = builtin_event_type(name)
    assert event_type is not None, name
    return event_type


def _errors(name: str, data: Any) -> list[str]:
    validator = Draft202012Validator(
        _type(name).schema, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [error.message for error in validator.iter_errors(data)]


def _raw_files() -> dict[str, dict[str, Any]]:
    directory = files("croupier.catalog") / "schemas"
    return {
        entry.name: json.loads(entry.read_text(encoding="utf-8"))
        for entry in directory.iterdir()
        if entry.name.endswith(".json")
    }


def _example(name: str, **match: Any) -> dict[str, Any]:
    for example in _type(name).examples:
        if all(example.get(key) == value for key, value in match.items()):
            return copy.deepcopy(example)
    raise AssertionError(f"no example of {name} matches {match}")


# ------------------------------------------------------------------ names and defaults


def test_the_catalog_ships_the_23_source_types_and_croupiers_own_2_and_nothing_else() -> None:
    names = {t.name for t in ALL_TYPES}
    assert len(ALL_TYPES) == 25
    assert names == {*PROVIDER_GUIDE_TYPES, *PRIZE_CAMPAIGN_TYPES, *ARTICLE_TYPES, *CROUPIER_TYPES}


def test_every_type_of_the_three_sources_is_present_by_name() -> None:
    sources = (*PROVIDER_GUIDE_TYPES, *PRIZE_CAMPAIGN_TYPES, *ARTICLE_TYPES)
    assert len(sources) == 23
    for name in sources:
        assert builtin_event_type(name) is not None, name


def test_croupiers_own_types_are_opt_in_system_types() -> None:
    for name in CROUPIER_TYPES:
        event_type = _type(name)
        assert event_type.category == "system", name
        assert event_type.default_subscription is False, name


def test_the_types_come_sorted_by_name_and_marked_builtin() -> None:
    assert [t.name for t in ALL_TYPES] == sorted(t.name for t in ALL_TYPES)
    assert all(t.builtin for t in ALL_TYPES)


def test_the_catalog_is_read_once_and_then_cached() -> None:
    assert builtin_event_types() is builtin_event_types()
    assert builtin_event_type("round.completed") is builtin_event_type("round.completed")


def test_an_unknown_name_is_not_a_builtin_type() -> None:
    assert builtin_event_type("round.exploded") is None
    assert builtin_event_type("") is None


def test_exactly_the_five_default_subscriptions_of_the_provider_guide_are_defaults() -> None:
    defaults = {t.name for t in ALL_TYPES if t.default_subscription}
    assert defaults == set(DEFAULT_SUBSCRIPTIONS)
    assert DEFAULT_SUBSCRIPTIONS == (
        "round.completed",
        "wallet.deposit_confirmed",
        "wallet.withdrawal_completed",
        "player.limit_reached",
        "system.maintenance",
    )


def test_the_other_eleven_provider_guide_types_are_opt_in() -> None:
    opt_in = [name for name in PROVIDER_GUIDE_TYPES if not _type(name).default_subscription]
    assert len(opt_in) == 11


# ------------------------------------------------------------------ core and non-core


def test_exactly_the_campaign_opt_ins_and_game_version_updates_are_not_core() -> None:
    assert {t.name for t in ALL_TYPES if not t.core} == NON_CORE_TYPES


def test_every_other_type_is_core_money_and_croupiers_own_included() -> None:
    core = {t.name for t in ALL_TYPES if t.core}
    assert len(core) == 22
    assert core == {t.name for t in ALL_TYPES} - NON_CORE_TYPES
    assert {*CROUPIER_TYPES, "wallet.credit.ok", "round.completed"} <= core


@pytest.mark.parametrize("core", ["false", 0, None, []])
def test_a_catalog_file_whose_core_is_not_a_bool_is_refused(tmp_path: Path, core: Any) -> None:
    # "false" as text would read as true: refusing it beats pausing the wrong types.
    body = {**_raw_files()["PLAYER_OPTED_IN.json"], "core": core}
    entry = tmp_path / "PLAYER_OPTED_IN.json"
    entry.write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(ValueError, match="'core' must be a bool"):
        _load(entry)


def test_a_catalog_file_without_core_loads_as_core(tmp_path: Path) -> None:
    body = {k: v for k, v in _raw_files()["PLAYER_OPTED_IN.json"].items() if k != "core"}
    entry = tmp_path / "PLAYER_OPTED_IN.json"
    entry.write_text(json.dumps(body), encoding="utf-8")
    assert _load(entry).core is True


# ------------------------------------------------------------------ files and metadata


def test_every_file_is_named_after_the_type_it_declares() -> None:
    raw = _raw_files()
    assert len(raw) == 25
    for file_name, body in raw.items():
        assert body["name"] + ".json" == file_name


def test_every_file_has_exactly_the_documented_keys() -> None:
    keys = {
        "name",
        "category",
        "description",
        "schema_version",
        "default_subscription",
        "schema",
        "examples",
    }
    for file_name, body in _raw_files().items():
        assert set(body) - {"core"} == keys, file_name


@pytest.mark.parametrize("event_type", ALL_TYPES, ids=lambda t: t.name)
def test_schema_version_is_semver_and_category_is_known(event_type: EventType) -> None:
    assert SEMVER.match(event_type.schema_version)
    assert event_type.category in CATEGORIES
    assert event_type.description


def test_categories_follow_the_sources() -> None:
    assert {_type(n).category for n in PRIZE_CAMPAIGN_TYPES[:3]} == {"prize"}
    assert {_type(n).category for n in PRIZE_CAMPAIGN_TYPES[3:]} == {"campaign"}
    for name in PROVIDER_GUIDE_TYPES:
        prefix = name.split(".")[0]
        expected = {"round": "game", "wallet": "financial"}.get(prefix, prefix)
        assert _type(name).category == expected, name


# ------------------------------------------------------------------ schemas and examples


@pytest.mark.parametrize("event_type", ALL_TYPES, ids=lambda t: t.name)
def test_every_shipped_schema_is_a_valid_draft_2020_12_schema(event_type: EventType) -> None:
    Draft202012Validator.check_schema(event_type.schema)
    assert event_type.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert event_type.schema["type"] == "object"


@pytest.mark.parametrize("event_type", ALL_TYPES, ids=lambda t: t.name)
def test_every_schema_leaves_room_for_new_optional_fields(event_type: EventType) -> None:
    assert event_type.schema.get("additionalProperties", True) is not False
    example = {**event_type.examples[0], "addedInAMinorVersion": 1}
    assert _errors(event_type.name, example) == []


@pytest.mark.parametrize("event_type", ALL_TYPES, ids=lambda t: t.name)
def test_every_example_validates_against_its_schema(event_type: EventType) -> None:
    assert event_type.examples
    for example in event_type.examples:
        assert _errors(event_type.name, example) == [], example


@pytest.mark.parametrize("event_type", ALL_TYPES, ids=lambda t: t.name)
def test_every_required_field_is_shown_in_the_first_example(event_type: EventType) -> None:
    for field in event_type.schema["required"]:
        assert field in event_type.examples[0], field
        assert field in event_type.schema["properties"], field


def test_the_prize_campaign_guides_own_examples_are_shipped() -> None:
    guide = {
        "PRIZE_PAYOUT_CREATED": ["cash", "free_spins", "deposit_bonus"],
        "PRIZE_PAYOUT_SUCCEEDED": ["cash", "bonus_amount", "catalog_item"],
    }
    for name, prize_types in guide.items():
        shipped = {e["prize_type"] for e in _type(name).examples}
        assert set(prize_types) <= shipped, name
    assert {
        "player_id": "player-abc123",
        "campaign_id": "summer-campaign-2024",
        "event_type": "PLAYER_OPTED_IN",
    } in _type("PLAYER_OPTED_IN").examples
    assert {
        "player_id": "player-def456",
        "campaign_id": "winter-tournament-2024",
        "event_type": "PLAYER_OPTED_OUT",
    } in _type("PLAYER_OPTED_OUT").examples
    assert {
        "campaign_id": "loyalty-rewards",
        "request_id": "550e8400-e29b-41d4-a716-446655440004",
        "player_id": "player-mno345",
        "player_currency": "USD",
        "event_type": "PRIZE_PAYOUT_SUCCEEDED",
        "status": "SUCCESS",
        "prize_type": "catalog_item",
        "item": "Gaming Headset",
        "value": 25.0,
        "bonus_id": 303,
    } in _type("PRIZE_PAYOUT_SUCCEEDED").examples


def test_the_articles_credit_payload_is_shipped_as_an_example() -> None:
    payload = {"player_id": "p_19f3", "amount": {"minor_units": 1460, "currency": "EUR"}}
    assert payload in _type("wallet.credit.ok").examples


def test_the_provider_guides_fields_are_all_required_where_it_shows_them() -> None:
    assert set(_type("round.completed").schema["required"]) == {
        "roundId",
        "gameId",
        "playerId",
        "externalPlayerId",
        "betAmount",
        "winAmount",
        "currency",
        "rtp",
        "duration",
        "provablyFair",
    }
    assert len(_type("wallet.deposit_confirmed").schema["required"]) == 11
    assert len(_type("player.limit_reached").schema["required"]) == 7


# ------------------------------------------------------------------ payloads that must fail


def test_a_round_with_a_text_bet_amount_is_refused() -> None:
    data = _example("round.completed")
    data["betAmount"] = "x"
    assert _errors("round.completed", data)


def test_a_round_without_provably_fair_nonce_is_refused() -> None:
    data = _example("round.completed")
    del data["provablyFair"]["nonce"]
    assert _errors("round.completed", data)


def test_a_deposit_amount_must_be_a_decimal_string() -> None:
    data = _example("wallet.deposit_confirmed")
    data["amount"] = 250.0
    assert _errors("wallet.deposit_confirmed", data)
    data["amount"] = "lots"
    assert _errors("wallet.deposit_confirmed", data)


def test_a_limit_of_an_unknown_type_is_refused() -> None:
    data = _example("player.limit_reached")
    data["limitType"] = "bogus"
    assert _errors("player.limit_reached", data)


def test_a_limit_with_an_unknown_period_or_action_is_refused() -> None:
    for field in ("period", "action"):
        data = _example("player.limit_reached")
        data[field] = "yearly"
        assert _errors("player.limit_reached", data), field


def test_a_rollback_must_name_the_transaction_it_reverses() -> None:
    data = _example("wallet.rollback")
    del data["originalTransactionId"]
    assert _errors("wallet.rollback", data)


def test_a_free_spins_payout_without_game_id_is_refused() -> None:
    data = _example("PRIZE_PAYOUT_CREATED", prize_type="free_spins")
    del data["game_id"]
    assert _errors("PRIZE_PAYOUT_CREATED", data)


@pytest.mark.parametrize(
    ("prize_type", "field"),
    [
        ("cash", "amount"),
        ("bonus_amount", "amount"),
        ("free_spins", "amount"),
        ("deposit_bonus", "percentage_value"),
        ("catalog_item", "item"),
        ("catalog_item", "value"),
    ],
)
def test_each_prize_type_requires_its_own_fields(prize_type: str, field: str) -> None:
    checked = 0
    for name in PRIZE_CAMPAIGN_TYPES[:3]:
        for example in _type(name).examples:
            if example["prize_type"] != prize_type:
                continue
            data = copy.deepcopy(example)
            del data[field]
            assert _errors(name, data), (name, prize_type, field)
            checked += 1
    assert checked, prize_type


def test_a_payout_event_type_or_status_that_does_not_match_the_type_is_refused() -> None:
    data = _example("PRIZE_PAYOUT_SUCCEEDED", prize_type="cash")
    assert _errors("PRIZE_PAYOUT_CREATED", data)
    data["event_type"] = "PRIZE_PAYOUT_CREATED"
    assert _errors("PRIZE_PAYOUT_CREATED", data)
    data["status"] = "TODO"
    assert _errors("PRIZE_PAYOUT_CREATED", data) == []


def test_a_payout_with_a_text_bonus_id_or_unknown_prize_type_is_refused() -> None:
    data = _example("PRIZE_PAYOUT_FAILED")
    data["bonus_id"] = "456"
    assert _errors("PRIZE_PAYOUT_FAILED", data)
    data = _example("PRIZE_PAYOUT_FAILED")
    data["prize_type"] = "jackpot"
    assert _errors("PRIZE_PAYOUT_FAILED", data)


def test_an_opt_in_carrying_the_opt_out_event_type_is_refused() -> None:
    data = _example("PLAYER_OPTED_IN")
    data["event_type"] = "PLAYER_OPTED_OUT"
    assert _errors("PLAYER_OPTED_IN", data)


def test_an_opt_out_without_campaign_is_refused() -> None:
    data = _example("PLAYER_OPTED_OUT")
    del data["campaign_id"]
    assert _errors("PLAYER_OPTED_OUT", data)


def test_article_money_must_be_integer_minor_units_with_a_currency_code() -> None:
    for minor_units, currency in [(14.6, "EUR"), (1460, "eur"), (1460, "E")]:
        data = {"player_id": "p_19f3", "amount": {"minor_units": minor_units, "currency": currency}}
        assert _errors("wallet.credit.ok", data), (minor_units, currency)


def test_a_settled_bet_needs_its_win_amount() -> None:
    data = _example("bet.settled")
    del data["win"]
    assert _errors("bet.settled", data)
    data = _example("bet.settled")
    data["win"] = {"minor_units": "1460", "currency": "EUR"}
    assert _errors("bet.settled", data)
