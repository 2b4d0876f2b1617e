"""The double-entry ledger: every money movement is a balanced set of postings.

Accounts, per tenant and currency:

* ``available``: what a player can bet with (one per player);
* ``held``: a player's stakes of authorized bets, until each is settled or cancelled;
* ``house``: the tenant's game account, which takes stakes and pays wins and credits;
* ``external``: money that enters or leaves the wallet through the operator
  (deposits, withdrawals, corrections made with an adjustment).

The postings of one transaction sum to zero in each currency, so every currency's postings
sum to zero over the whole ledger; a player's ``available`` and ``held`` balances are the
sums of their postings and never go below zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Account = Literal["available", "held", "house", "external"]
#: The accounts that belong to a player; the others are the tenant's.
PLAYER_ACCOUNTS: tuple[Account, ...] = ("available", "held")
#: What a wallet transaction did, in the words of the event catalog where it has them.
TransactionKind = Literal["bet", "settle", "rollback", "credit", "adjustment"]


@dataclass(frozen=True)
class Posting:
    """One ledger line: ``amount`` minor units into ``account`` (negative: out of it)."""

    account: Account
    amount: int

    def owner(self, player_id: str) -> str:
        """Whose account it is: the player's id, or "" for the tenant's own accounts."""
        return player_id if self.account in PLAYER_ACCOUNTS else ""


def authorize(stake: int) -> list[Posting]:
    """A bet is authorized: its stake moves from available to held."""
    return [Posting("available", -stake), Posting("held", stake)]


def settle(stake: int, win: int) -> list[Posting]:
    """A bet is settled: the hold goes to the house, and the house pays the win."""
    postings = [Posting("held", -stake), Posting("house", stake)]
    if win:
        postings += [Posting("house", -win), Posting("available", win)]
    return postings


def cancel(stake: int) -> list[Posting]:
    """A bet is cancelled: the hold goes back to available."""
    return [Posting("held", -stake), Posting("available", stake)]


def credit(amount: int) -> list[Posting]:
    """A credit without a bet (a prize payout, a bonus): paid by the house."""
    return [Posting("house", -amount), Posting("available", amount)]


def adjust(amount: int) -> list[Posting]:
    """An operator's deposit (positive) or correction (either sign) from outside the wallet."""
    return [Posting("external", -amount), Posting("available", amount)]


def effect(postings: Iterable[Posting]) -> tuple[int, int]:
    """What ``postings`` do to a player's (available, held)."""
    available = held = 0
    for p in postings:
        if p.account == "available":
            available += p.amount
        elif p.account == "held":
            held += p.amount
    return available, held


def imbalance(postings: Iterable[tuple[str, int]]) -> dict[str, int]:
    """The currencies whose ``(currency, amount)`` postings do not sum to zero, with the sum."""
    sums: dict[str, int] = defaultdict(int)
    for currency, amount in postings:
        sums[currency] += amount
    return {currency: total for currency, total in sums.items() if total}
