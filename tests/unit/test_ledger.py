"""The ledger: every movement balances, and does to a player's balances what it says."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from croupier.domain import ledger
from croupier.domain.wallet import dumps_exact


@pytest.mark.parametrize(
    ("postings", "effect"),
    [
        (ledger.authorize(200), (-200, 200)),
        (ledger.settle(200, 1460), (1460, -200)),
        (ledger.settle(200, 0), (0, -200)),
        (ledger.cancel(200), (200, -200)),
        (ledger.credit(500), (500, 0)),
        (ledger.adjust(-300), (-300, 0)),
    ],
)
def test_every_movement_balances_and_moves_the_player_as_named(
    postings: list[ledger.Posting], effect: tuple[int, int]
) -> None:
    assert sum(p.amount for p in postings) == 0
    assert ledger.imbalance(("EUR", p.amount) for p in postings) == {}
    assert ledger.effect(postings) == effect


def test_a_loss_writes_no_empty_postings() -> None:
    assert all(p.amount for p in ledger.settle(200, 0))


def test_an_imbalance_names_the_currency_and_the_sum() -> None:
    assert ledger.imbalance([("EUR", 5), ("EUR", -3), ("JPY", 1), ("JPY", -1)]) == {"EUR": 2}


def test_the_tenants_accounts_have_no_owner() -> None:
    assert ledger.Posting("house", 1).owner("p1") == ""
    assert ledger.Posting("available", 1).owner("p1") == "p1"


def test_money_in_event_payloads_is_written_exactly() -> None:
    raw = dumps_exact({"amount": Decimal("14.60"), "n": [Decimal("0.10"), 3], "s": "x"})
    assert raw == b'{"amount":14.60,"n":[0.10,3],"s":"x"}'
    assert orjson.loads(raw) == {"amount": 14.6, "n": [0.1, 3], "s": "x"}
