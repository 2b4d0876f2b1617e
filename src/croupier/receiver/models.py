"""Typed models of the ``data`` of croupier's shipped event types (pydantic v2).

One model per event type, mirroring its JSON Schema: the same properties, the same
required ones, the same types. Python attributes are snake_case; camelCase properties are
read from (and dumped to, with ``by_alias=True``) their wire names, so ``winAmount`` is
``data.win_amount``. Unknown fields are kept (``extra="allow"``): a field added to a type
later does not break a receiver. Importing this module needs pydantic; the rest of
``croupier.receiver`` does not.

::

    from croupier.receiver.models import RoundCompleted, parse_data, typed

    data = parse_data(event)            # the model chosen by event.type; None if unknown
    rc = typed(event, RoundCompleted)   # TypedEvent[RoundCompleted]; ValueError if not one
    rc.data.win_amount                  # float, type-checked
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar, get_args
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from croupier.receiver.event import Event

__all__ = [
    "MODELS",
    "BetSettled",
    "DeliveryDead",
    "EndpointDisabled",
    "EventData",
    "Money",
    "PlayerCreated",
    "PlayerLimitReached",
    "PlayerOptedIn",
    "PlayerOptedOut",
    "PlayerSelfExcluded",
    "PlayerSuspended",
    "PrizePayoutCreated",
    "PrizePayoutFailed",
    "PrizePayoutSucceeded",
    "ProvablyFair",
    "RoundCancelled",
    "RoundCompleted",
    "RoundJackpotWon",
    "SystemGameVersionUpdated",
    "SystemIncident",
    "SystemMaintenance",
    "TypedEvent",
    "WalletBetPlaced",
    "WalletCreditOk",
    "WalletDepositConfirmed",
    "WalletRollback",
    "WalletWinCredited",
    "WalletWithdrawalCompleted",
    "WalletWithdrawalFailed",
    "parse_data",
    "typed",
]

NonEmptyStr = Annotated[str, Field(min_length=1)]
NonNegative = Annotated[float, Field(ge=0)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3,5}$")]
PrizeType = Literal["cash", "free_spins", "bonus_amount", "deposit_bonus", "catalog_item"]


class EventData(BaseModel):
    """Base of every event's data model; ``EVENT_TYPE`` is the type it models."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    EVENT_TYPE: ClassVar[str]


class _CamelData(EventData):
    # Types whose schema spells properties in camelCase.
    model_config = ConfigDict(alias_generator=to_camel)


# Shared pieces ---------------------------------------------------------------------------


class Money(BaseModel):
    """Money as an integer of minor units (e.g. cents) plus a currency code."""

    model_config = ConfigDict(extra="allow")

    minor_units: int
    currency: CurrencyCode


class ProvablyFair(BaseModel):
    """The seeds that let a player check a round's outcome."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    server_seed_hash: NonEmptyStr
    client_seed: NonEmptyStr
    nonce: NonNegative


# Campaign and prize types (snake_case on the wire) -----------------------------------------


class PlayerOptedIn(EventData):
    """``PLAYER_OPTED_IN``: a player opted into a campaign."""

    EVENT_TYPE: ClassVar[str] = "PLAYER_OPTED_IN"

    player_id: NonEmptyStr
    campaign_id: NonEmptyStr
    event_type: Literal["PLAYER_OPTED_IN"]


class PlayerOptedOut(EventData):
    """``PLAYER_OPTED_OUT``: a player opted out of a campaign."""

    EVENT_TYPE: ClassVar[str] = "PLAYER_OPTED_OUT"

    player_id: NonEmptyStr
    campaign_id: NonEmptyStr
    event_type: Literal["PLAYER_OPTED_OUT"]


# Which optional fields each prize type makes required, as the schemas' allOf says.
_PRIZE_REQUIRES: dict[str, tuple[str, ...]] = {
    "cash": ("amount",),
    "bonus_amount": ("amount",),
    "free_spins": ("amount", "game_id"),
    "deposit_bonus": ("percentage_value",),
    "catalog_item": ("item", "value"),
}


class _PrizePayout(EventData):
    campaign_id: NonEmptyStr
    request_id: UUID
    player_id: NonEmptyStr
    player_currency: NonEmptyStr
    prize_type: PrizeType
    amount: NonNegative | None = None
    bonus_id: int | None = None
    game_id: int | None = None
    percentage_value: NonNegative | None = None
    item: NonEmptyStr | None = None
    value: NonNegative | None = None

    @model_validator(mode="after")
    def _prize_fields(self) -> Self:
        missing = [f for f in _PRIZE_REQUIRES[self.prize_type] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"prize_type {self.prize_type} requires {', '.join(missing)}")
        return self


class PrizePayoutCreated(_PrizePayout):
    """``PRIZE_PAYOUT_CREATED``: a prize payout was created (status ``TODO``)."""

    EVENT_TYPE: ClassVar[str] = "PRIZE_PAYOUT_CREATED"

    event_type: Literal["PRIZE_PAYOUT_CREATED"]
    status: Literal["TODO"]


class PrizePayoutSucceeded(_PrizePayout):
    """``PRIZE_PAYOUT_SUCCEEDED``: a prize payout was paid (status ``SUCCESS``)."""

    EVENT_TYPE: ClassVar[str] = "PRIZE_PAYOUT_SUCCEEDED"

    event_type: Literal["PRIZE_PAYOUT_SUCCEEDED"]
    status: Literal["SUCCESS"]


class PrizePayoutFailed(_PrizePayout):
    """``PRIZE_PAYOUT_FAILED``: a prize payout failed after retries (status ``FAILED``)."""

    EVENT_TYPE: ClassVar[str] = "PRIZE_PAYOUT_FAILED"

    event_type: Literal["PRIZE_PAYOUT_FAILED"]
    status: Literal["FAILED"]


# Ledger types in minor units (snake_case on the wire) -------------------------------------


class BetSettled(EventData):
    """``bet.settled``: a bet was settled."""

    EVENT_TYPE: ClassVar[str] = "bet.settled"

    bet_id: NonEmptyStr
    round_id: NonEmptyStr
    player_id: NonEmptyStr
    amount: Money
    win: Money


class WalletCreditOk(EventData):
    """``wallet.credit.ok``: a credit to a player's wallet was applied."""

    EVENT_TYPE: ClassVar[str] = "wallet.credit.ok"

    player_id: NonEmptyStr
    amount: Money


# croupier's own types (snake_case on the wire) --------------------------------------------


class DeliveryDead(EventData):
    """``delivery.dead``: a delivery ran out of retries and went to the dead letter queue."""

    EVENT_TYPE: ClassVar[str] = "delivery.dead"

    delivery_id: NonEmptyStr
    event_id: NonEmptyStr
    #: The type of the event the dead delivery carried (``event_type`` would clash with the
    #: flat data format's own field).
    dead_event_type: NonEmptyStr
    endpoint_id: NonEmptyStr
    endpoint_url: str | None = None
    attempts: Annotated[int, Field(ge=1)]
    #: ``None`` when the last attempt got no HTTP answer (a timeout, a refused connection).
    last_status_code: int | None = None
    last_error: str | None = None
    dead_at: datetime


class EndpointDisabled(EventData):
    """``endpoint.disabled``: croupier disabled an endpoint (it answered 410, or failed
    without a single success for the configured days)."""

    EVENT_TYPE: ClassVar[str] = "endpoint.disabled"

    endpoint_id: NonEmptyStr
    endpoint_url: str | None = None
    reason: Literal["gone", "failing"]
    message: str
    failing_since: datetime | None = None
    disabled_at: datetime


# Player types (camelCase on the wire) ------------------------------------------------------


class PlayerCreated(_CamelData):
    """``player.created``: a player account was created."""

    EVENT_TYPE: ClassVar[str] = "player.created"

    player_id: NonEmptyStr
    external_player_id: NonEmptyStr
    currency: NonEmptyStr | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    created_at: datetime | None = None


class PlayerLimitReached(_CamelData):
    """``player.limit_reached``: a responsible-gaming limit was reached."""

    EVENT_TYPE: ClassVar[str] = "player.limit_reached"

    player_id: NonEmptyStr
    external_player_id: NonEmptyStr
    limit_type: Literal["deposit", "loss", "session", "wagering"]
    limit_value: float
    current_value: float
    period: Literal["daily", "weekly", "monthly"]
    action: Literal["warned", "blocked"]


class PlayerSelfExcluded(_CamelData):
    """``player.self_excluded``: a player excluded themselves."""

    EVENT_TYPE: ClassVar[str] = "player.self_excluded"

    player_id: NonEmptyStr
    external_player_id: NonEmptyStr | None = None
    excluded_at: datetime
    excluded_until: datetime | None = None


class PlayerSuspended(_CamelData):
    """``player.suspended``: a player account was suspended."""

    EVENT_TYPE: ClassVar[str] = "player.suspended"

    player_id: NonEmptyStr
    external_player_id: NonEmptyStr | None = None
    reason: NonEmptyStr
    suspended_at: datetime | None = None
    suspended_until: datetime | None = None


# Round types (camelCase on the wire) -------------------------------------------------------


class RoundCancelled(_CamelData):
    """``round.cancelled``: a game round was cancelled."""

    EVENT_TYPE: ClassVar[str] = "round.cancelled"

    round_id: NonEmptyStr
    game_id: NonEmptyStr
    player_id: NonEmptyStr
    external_player_id: NonEmptyStr | None = None
    reason: NonEmptyStr
    refund_amount: NonNegative | None = None
    currency: NonEmptyStr | None = None
    cancelled_at: datetime | None = None

    @model_validator(mode="after")
    def _refund_has_currency(self) -> Self:
        # The schema's dependentRequired: a refund amount means nothing without its currency.
        if self.refund_amount is not None and self.currency is None:
            raise ValueError("refundAmount requires currency")
        return self


class RoundCompleted(_CamelData):
    """``round.completed``: a game round finished."""

    EVENT_TYPE: ClassVar[str] = "round.completed"

    round_id: NonEmptyStr
    game_id: NonEmptyStr
    player_id: NonEmptyStr
    external_player_id: NonEmptyStr
    bet_amount: NonNegative
    win_amount: NonNegative
    currency: NonEmptyStr
    rtp: NonNegative
    duration: NonNegative
    provably_fair: ProvablyFair


class RoundJackpotWon(_CamelData):
    """``round.jackpot_won``: a jackpot was won in a round."""

    EVENT_TYPE: ClassVar[str] = "round.jackpot_won"

    round_id: NonEmptyStr
    game_id: NonEmptyStr
    player_id: NonEmptyStr
    external_player_id: NonEmptyStr | None = None
    jackpot_id: NonEmptyStr
    jackpot_name: NonEmptyStr | None = None
    amount: NonNegative
    currency: NonEmptyStr
    won_at: datetime | None = None


# System types (camelCase on the wire) ------------------------------------------------------


class SystemGameVersionUpdated(_CamelData):
    """``system.game_version_updated``: a game was updated to a new version."""

    EVENT_TYPE: ClassVar[str] = "system.game_version_updated"

    game_id: NonEmptyStr
    version: NonEmptyStr
    previous_version: NonEmptyStr | None = None
    released_at: datetime | None = None
    changelog: str | None = None


class SystemIncident(_CamelData):
    """``system.incident``: an incident was opened or changed state."""

    EVENT_TYPE: ClassVar[str] = "system.incident"

    incident_id: NonEmptyStr
    status: Literal["investigating", "identified", "monitoring", "resolved"]
    severity: Literal["minor", "major", "critical"]
    title: NonEmptyStr | None = None
    message: NonEmptyStr | None = None
    started_at: datetime
    resolved_at: datetime | None = None
    affected_games: list[NonEmptyStr] | None = None


class SystemMaintenance(_CamelData):
    """``system.maintenance``: a maintenance window was scheduled or changed state."""

    EVENT_TYPE: ClassVar[str] = "system.maintenance"

    maintenance_id: NonEmptyStr
    status: Literal["scheduled", "started", "completed", "cancelled"] | None = None
    starts_at: datetime
    ends_at: datetime
    message: NonEmptyStr | None = None
    affected_games: list[NonEmptyStr] | None = None


# Wallet types in major units (camelCase on the wire) ---------------------------------------


class _RoundMoneyMovement(_CamelData):
    """The fields a stake and a win share: one movement of a round's money."""

    transaction_id: NonEmptyStr
    round_id: NonEmptyStr
    game_id: NonEmptyStr | None = None
    player_id: NonEmptyStr
    external_player_id: NonEmptyStr | None = None
    amount: NonNegative
    currency: NonEmptyStr
    balance: float | None = None
    created_at: datetime | None = None


class WalletBetPlaced(_RoundMoneyMovement):
    """``wallet.bet_placed``: a stake was deducted from a player's balance."""

    EVENT_TYPE: ClassVar[str] = "wallet.bet_placed"


class WalletWinCredited(_RoundMoneyMovement):
    """``wallet.win_credited``: a win was credited to a player's balance."""

    EVENT_TYPE: ClassVar[str] = "wallet.win_credited"


class WalletRollback(_CamelData):
    """``wallet.rollback``: a bet or win transaction was rolled back."""

    EVENT_TYPE: ClassVar[str] = "wallet.rollback"

    transaction_id: NonEmptyStr
    original_transaction_id: NonEmptyStr
    original_transaction_type: Literal["bet", "win"] | None = None
    round_id: NonEmptyStr | None = None
    player_id: NonEmptyStr
    external_player_id: NonEmptyStr | None = None
    amount: NonNegative
    currency: NonEmptyStr
    balance: float | None = None
    reason: NonEmptyStr | None = None
    created_at: datetime | None = None


class WalletDepositConfirmed(_CamelData):
    """``wallet.deposit_confirmed``: a crypto deposit was confirmed on-chain."""

    EVENT_TYPE: ClassVar[str] = "wallet.deposit_confirmed"

    deposit_id: NonEmptyStr
    player_id: NonEmptyStr
    external_player_id: NonEmptyStr
    #: A decimal string, kept as text so no precision is lost; ``Decimal(amount)`` to count.
    amount: Annotated[str, Field(min_length=1, pattern=r"^[0-9]+(\.[0-9]+)?$")]
    currency: NonEmptyStr
    chain: NonEmptyStr
    tx_hash: NonEmptyStr
    confirmations: NonNegative
    from_address: NonEmptyStr
    to_address: NonEmptyStr
    credited_balance: float


class WalletWithdrawalCompleted(_CamelData):
    """``wallet.withdrawal_completed``: a withdrawal was paid out and confirmed."""

    EVENT_TYPE: ClassVar[str] = "wallet.withdrawal_completed"

    withdrawal_id: NonEmptyStr
    player_id: NonEmptyStr
    external_player_id: NonEmptyStr | None = None
    amount: NonNegative
    currency: NonEmptyStr
    chain: NonEmptyStr | None = None
    tx_hash: NonEmptyStr | None = None
    to_address: NonEmptyStr | None = None
    balance: float | None = None
    completed_at: datetime | None = None


class WalletWithdrawalFailed(_CamelData):
    """``wallet.withdrawal_failed``: a withdrawal failed."""

    EVENT_TYPE: ClassVar[str] = "wallet.withdrawal_failed"

    withdrawal_id: NonEmptyStr
    player_id: NonEmptyStr
    external_player_id: NonEmptyStr | None = None
    amount: NonNegative
    currency: NonEmptyStr
    reason: NonEmptyStr
    refunded: bool | None = None
    failed_at: datetime | None = None


#: Every shipped event type and the model of its data.
MODELS: dict[str, type[EventData]] = {
    model.EVENT_TYPE: model
    for model in (
        PlayerOptedIn,
        PlayerOptedOut,
        PrizePayoutCreated,
        PrizePayoutFailed,
        PrizePayoutSucceeded,
        BetSettled,
        DeliveryDead,
        EndpointDisabled,
        PlayerCreated,
        PlayerLimitReached,
        PlayerSelfExcluded,
        PlayerSuspended,
        RoundCancelled,
        RoundCompleted,
        RoundJackpotWon,
        SystemGameVersionUpdated,
        SystemIncident,
        SystemMaintenance,
        WalletBetPlaced,
        WalletCreditOk,
        WalletDepositConfirmed,
        WalletRollback,
        WalletWinCredited,
        WalletWithdrawalCompleted,
        WalletWithdrawalFailed,
    )
}

D = TypeVar("D", bound=EventData)


@dataclass(frozen=True)
class TypedEvent(Generic[D]):
    """A verified event with its data parsed into the model ``D``."""

    event: Event
    data: D

    @property
    def id(self) -> str:
        """The event id (the dedupe key)."""
        return self.event.id

    @property
    def type(self) -> str:
        """The event type."""
        return self.event.type


def parse_data(event: Event) -> EventData | None:
    """The event's data as the model of its type; ``None`` for a type not shipped here.

    Raises ``pydantic.ValidationError`` when the data does not fit the model.
    """
    model = MODELS.get(event.type)
    return None if model is None else model.model_validate(_model_input(event, model))


def typed(event: Event, model: type[D]) -> TypedEvent[D]:
    """The event with its data parsed as ``model``, for type-checked field access.

    Raises ``ValueError`` when ``event.type`` is not the model's type, and
    ``pydantic.ValidationError`` when the data does not fit it.
    """
    if event.type != model.EVENT_TYPE:
        raise ValueError(f"event type {event.type!r} is not {model.EVENT_TYPE!r}")
    return TypedEvent(event, model.model_validate(_model_input(event, model)))


def _model_input(event: Event, model: type[EventData]) -> dict[str, Any]:
    # The flat data format moves event_type out of data; types whose schema requires it to
    # be their own name get it back from the event's type. A field of that name meaning
    # something else (delivery.dead's: the dead event's type) is not refilled, since the
    # type's name would be a wrong value, not a missing one.
    field = model.model_fields.get("event_type")
    if (
        field is not None
        and get_args(field.annotation) == (model.EVENT_TYPE,)
        and "event_type" not in event.data
    ):
        return {**event.data, "event_type": event.type}
    return event.data
