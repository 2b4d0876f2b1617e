"""Publishing validates with a fast compiled validator first, and lets jsonschema (the
reference) decide whenever the fast one refuses. That is only sound if the fast one never
accepts what the reference refuses: checked here on every shipped type, its examples and
thousands of seeded mutations of them, and on schemas with formats and patterns."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from croupier.catalog import builtin_event_types
from croupier.services.event_types import _Checker

MUTATIONS = 400
_CHARS = "0123456789-:+.TZtz _aA@/#\\é"


def _mutate_text(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(chars) + 1)
        roll = rng.random()
        if roll < 0.4 and chars:
            chars[min(i, len(chars) - 1)] = rng.choice(_CHARS)
        elif roll < 0.7:
            chars.insert(i, rng.choice(_CHARS))
        elif chars:
            del chars[min(i, len(chars) - 1)]
    return "".join(chars)


def _mutate(rng: random.Random, value: Any) -> Any:
    """One random change somewhere in ``value``: a text edited, a type swapped, a key
    dropped or added, a number pushed out of range."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.25:
            out[f"extra_{rng.randrange(9)}"] = rng.choice([1, "x", None, [], {}])
        else:
            out[key] = _mutate(rng, value[key])
        return out
    if isinstance(value, list) and value and rng.random() < 0.7:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        out_list[i] = _mutate(rng, out_list[i])
        return out_list
    if isinstance(value, str) and rng.random() < 0.8:
        return _mutate_text(rng, value)
    if isinstance(value, bool):
        return rng.choice([not value, "true", 1, None])
    if isinstance(value, int | float):
        return rng.choice([-value, value * 10**9, str(value), 0.5, -1, None])
    return rng.choice([None, "", 0, [], {}, "2024-13-01T00:00:00Z"])


@pytest.mark.parametrize("event_type", builtin_event_types(), ids=lambda t: t.name)
def test_the_fast_validator_never_accepts_what_the_reference_refuses(event_type: Any) -> None:
    checker = _Checker.of(event_type.schema)
    assert checker.fast is not None, "every shipped schema compiles for the fast path"
    rng = random.Random(event_type.name)
    for example in event_type.examples:
        assert checker.fast.is_valid(example)
        assert checker.reference.is_valid(example)
        for _ in range(MUTATIONS):
            candidate = _mutate(rng, copy.deepcopy(example))
            if checker.fast.is_valid(candidate):
                assert checker.reference.is_valid(candidate), candidate


@pytest.mark.parametrize(
    ("fmt", "seed"),
    [
        ("date-time", "2024-01-01T00:00:00.123+05:30"),
        ("date", "2024-02-29"),
        ("time", "10:00:00Z"),
        ("uuid", "00000000-0000-0000-0000-000000000000"),
        ("email", "player@example.com"),
        ("ipv4", "10.0.0.1"),
        ("ipv6", "::1"),
        ("hostname", "games.example"),
        ("uri", "https://example.com/a?b=c"),
    ],
)
def test_formats_are_judged_as_the_reference_judges_them(fmt: str, seed: str) -> None:
    checker = _Checker.of({"type": "string", "format": fmt})
    assert checker.fast is not None
    rng = random.Random(fmt)
    for _ in range(3000):
        text = _mutate_text(rng, seed)
        if checker.fast.is_valid(text):
            assert checker.reference.is_valid(text), (fmt, text)


def test_patterns_and_numbers_are_no_more_lenient_than_the_reference() -> None:
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}[0-9]{2}$"},
            "word": {"type": "string", "pattern": "\\w+"},
            "n": {"type": "integer", "minimum": 0, "maximum": 10, "multipleOf": 2},
            "x": {"type": "number", "exclusiveMinimum": 0},
        },
        "required": ["code"],
        "additionalProperties": False,
    }
    checker = _Checker.of(schema)
    rng = random.Random(7)
    base = {"code": "EUR12", "word": "héllo", "n": 4, "x": 0.5}
    for _ in range(3000):
        candidate = _mutate(rng, copy.deepcopy(base))
        if checker.fast is not None and checker.fast.is_valid(candidate):
            assert checker.reference.is_valid(candidate), candidate
