"""The wallet's values: players' accounts, game sessions, bets, credits, the transactions
of the ledger, and the events each movement publishes through the outbox."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from croupier.domain.ledger import Posting, TransactionKind
from croupier.domain.money import Money, major_decimal

BetStatus = Literal["authorized", "settled", "cancelled"]
#: Credits with this reason also publish the prize-campaign events.
PRIZE_PAYOUT = "prize_payout"


@dataclass(frozen=True)
class PlayerAccount:
    tenant_id: str
    player_id: str
    currency: str
    exponent: int
    available: int
    held: int
    created_at_ms: int


@dataclass(frozen=True)
class GameSession:
    id: str
    tenant_id: str
    player_id: str
    created_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True)
class Bet:
    tenant_id: str
    id: str
    status: BetStatus
    #: None for a bet cancelled before croupier saw it authorized (it may never be).
    player_id: str | None
    round_id: str | None
    session_id: str | None
    hold_id: str | None
    amount: int | None
    currency: str | None
    win: int | None
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True)
class Credit:
    tenant_id: str
    id: str
    player_id: str
    amount: int
    currency: str
    reason: str
    campaign_id: str | None
    transaction_id: str
    created_at_ms: int


@dataclass(frozen=True)
class WalletTransaction:
    """One movement of the ledger, with the player's balances after it."""

    id: str
    tenant_id: str
    player_id: str
    kind: TransactionKind
    reference: str
    round_id: str | None
    amount: int
    currency: str
    available_after: int
    held_after: int
    reason: str | None
    trace_id: str | None
    created_at_ms: int
    postings: tuple[Posting, ...] = ()
    seq: int = 0


@dataclass(frozen=True)
class WalletAnswer:
    """What a wallet write answers, and what its idempotency record keeps for replays."""

    status: str
    player_id: str
    currency: str
    exponent: int
    available: int
    held: int
    hold_id: str | None = None
    bet_id: str | None = None
    credit_id: str | None = None
    transaction_id: str | None = None

    @property
    def balance(self) -> Money:
        """The available balance, as write answers show it."""
        return Money(self.available, self.currency)

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_record(cls, raw: dict[str, Any]) -> WalletAnswer:
        return cls(**raw)


@dataclass(frozen=True)
class WalletEvent:
    """An event a movement publishes, with its payload as exact JSON."""

    type: str
    data_json: bytes = field(repr=False)


def bet_placed(tx: WalletTransaction, account: PlayerAccount, bet_id: str) -> WalletEvent:
    return _event(
        "wallet.bet_placed",
        {
            "transactionId": tx.id,
            "betId": bet_id,
            "roundId": tx.round_id,
            "playerId": tx.player_id,
            "amount": major_decimal(tx.amount, account.exponent),
            "currency": tx.currency,
            "balance": major_decimal(tx.available_after, account.exponent),
            "createdAt": iso(tx.created_at_ms),
        },
    )


@dataclass(frozen=True)
class RoundDetails:
    """What a settle may tell of its round beyond the money: the game, and the inputs that
    let the player verify a provably fair outcome."""

    game_id: str
    server_seed_hash: str
    client_seed: str
    nonce: int


def settled(
    tx: WalletTransaction,
    account: PlayerAccount,
    bet: Bet,
    stake: int,
    details: RoundDetails | None,
) -> list[WalletEvent]:
    """``wallet.win_credited`` and ``bet.settled``, a loss as a win of zero; and
    ``round.completed`` when the settle gave the round's details, which its schema requires."""
    exponent = account.exponent
    events = [
        _event(
            "wallet.win_credited",
            {
                "transactionId": tx.id,
                "betId": bet.id,
                "roundId": tx.round_id,
                "playerId": tx.player_id,
                "amount": major_decimal(tx.amount, exponent),
                "currency": tx.currency,
                "balance": major_decimal(tx.available_after, exponent),
                "createdAt": iso(tx.created_at_ms),
            },
        ),
        _event(
            "bet.settled",
            {
                "bet_id": bet.id,
                "round_id": tx.round_id,
                "player_id": tx.player_id,
                "amount": {"minor_units": stake, "currency": tx.currency},
                "win": {"minor_units": tx.amount, "currency": tx.currency},
                "transaction_id": tx.id,
            },
        ),
    ]
    if details is not None:
        events.append(
            _event(
                "round.completed",
                {
                    "roundId": tx.round_id,
                    "gameId": details.game_id,
                    "playerId": tx.player_id,
                    # The wallet knows the player by one id: the operator's, given at launch.
                    "externalPlayerId": tx.player_id,
                    "betAmount": major_decimal(stake, exponent),
                    "winAmount": major_decimal(tx.amount, exponent),
                    "currency": tx.currency,
                    # Return to player, to four decimals, from integers: no float on the way.
                    "rtp": (Decimal(tx.amount) / Decimal(stake)).quantize(Decimal("0.0001")),
                    "duration": max(0, tx.created_at_ms - bet.created_at_ms),
                    "provablyFair": {
                        "serverSeedHash": details.server_seed_hash,
                        "clientSeed": details.client_seed,
                        "nonce": details.nonce,
                    },
                },
            )
        )
    return events


def rolled_back(
    tx: WalletTransaction, account: PlayerAccount, bet_transaction_id: str
) -> WalletEvent:
    return _event(
        "wallet.rollback",
        {
            "transactionId": tx.id,
            "originalTransactionId": bet_transaction_id,
            "originalTransactionType": "bet",
            "betId": tx.reference,
            "roundId": tx.round_id,
            "playerId": tx.player_id,
            "amount": major_decimal(tx.amount, account.exponent),
            "currency": tx.currency,
            "balance": major_decimal(tx.available_after, account.exponent),
            "reason": tx.reason,
            "createdAt": iso(tx.created_at_ms),
        },
    )


def credited(tx: WalletTransaction, account: PlayerAccount, credit: Credit) -> list[WalletEvent]:
    """``wallet.credit.ok`` for every credit; a prize payout also publishes the prize
    campaign's ``PRIZE_PAYOUT_CREATED`` and ``PRIZE_PAYOUT_SUCCEEDED``, sharing one
    ``request_id`` that receivers drop duplicates by."""
    events = [
        _event(
            "wallet.credit.ok",
            {
                "player_id": tx.player_id,
                "amount": {"minor_units": tx.amount, "currency": tx.currency},
                "transaction_id": tx.id,
                "credit_id": credit.id,
                "reason": credit.reason,
                "campaign_id": credit.campaign_id,
            },
        )
    ]
    if credit.reason == PRIZE_PAYOUT:
        request_id = str(uuid.UUID(bytes=hashlib.sha256(tx.id.encode()).digest()[:16], version=4))
        common = {
            "campaign_id": credit.campaign_id,
            "request_id": request_id,
            "player_id": tx.player_id,
            "player_currency": tx.currency,
            "prize_type": "cash",
            "amount": major_decimal(tx.amount, account.exponent),
        }
        events += [
            _event(
                "PRIZE_PAYOUT_CREATED",
                {**common, "event_type": "PRIZE_PAYOUT_CREATED", "status": "TODO"},
            ),
            _event(
                "PRIZE_PAYOUT_SUCCEEDED",
                {**common, "event_type": "PRIZE_PAYOUT_SUCCEEDED", "status": "SUCCESS"},
            ),
        ]
    return events


def iso(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds: ``2026-11-21T09:26:50.123Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _event(type_: str, data: dict[str, Any]) -> WalletEvent:
    return WalletEvent(type_, dumps_exact({k: v for k, v in data.items() if v is not None}))


def dumps_exact(value: Any) -> bytes:
    """JSON in which a ``Decimal`` is written as the number it is (``14.60``), never through
    a float: the money in events is exact to the last minor unit."""
    if isinstance(value, Decimal):
        return format(value, "f").encode()
    if isinstance(value, dict):
        items = (orjson.dumps(str(k)) + b":" + dumps_exact(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(dumps_exact(v) for v in value) + b"]"
    return orjson.dumps(value)
