"""The seamless wallet over REST: players, sessions, bets, credits, adjustments, currencies.

Every write needs ``X-Idempotency-Key``. Bodies are read with JSON numbers parsed straight
into ``Decimal`` from their text (:class:`ExactJsonRoute`), so ``"amount": 2.00`` is checked
exactly against the currency and never goes through a float.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.routing import APIRoute
from pydantic import Field, StrictInt, StrictStr

from croupier.api.rest.context import current_trace_id
from croupier.api.rest.deps import ContainerDep, PrincipalDep
from croupier.api.rest.models import Body, Text
from croupier.api.rest.routes._params import DEFAULT, Cursor, Limit
from croupier.domain.envelope import iso_ms
from croupier.domain.wallet import PlayerAccount, WalletAnswer, WalletTransaction
from croupier.services.wallet import (
    AdjustmentRequest,
    AuthorizeRequest,
    CancelRequest,
    CreditRequest,
    MoneyIn,
    ProvablyFair,
    SettleRequest,
    money_view,
)


class _ExactJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(
                await self.body(), parse_float=Decimal, parse_constant=no_constant
            )
        return self._json


def no_constant(name: str) -> Any:
    """For ``json.loads``: NaN and Infinity are not JSON; the standard parser takes them
    unless told not to."""
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


class ExactJsonRoute(APIRoute):
    """A route whose JSON body keeps numbers exact: decimals as ``Decimal``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact(request: Request) -> Response:
            return await handler(_ExactJsonRequest(request.scope, request.receive))

        return exact


router = APIRouter(prefix="/v1", tags=["wallet"], route_class=ExactJsonRoute)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="X-Idempotency-Key",
        description="Required on every write: a replay with the same key and request gets "
        "the first answer again.",
    ),
]

#: An amount in major units: a decimal string ("2.00"), or an exact JSON number (2.00).
MajorUnits = Decimal | StrictStr | StrictInt


class MoneyBody(Body):
    """``{"amount": "2.00", "currency": "EUR"}`` or ``{"minor_units": 200, "currency": "EUR"}``."""

    amount: MajorUnits | None = None
    minor_units: StrictInt | None = None
    currency: Text


class PlayerIn(Body):
    player_id: Text
    currency: Text


class SessionIn(Body):
    player_id: Text
    ttl_seconds: StrictInt | None = None


class AuthorizeIn(Body):
    session_id: Text
    bet_id: Text
    round_id: Text
    amount: MoneyBody
    player_id: Text | None = None


class ProvablyFairIn(Body):
    server_seed_hash: Text
    client_seed: Text
    nonce: StrictInt


class SettleIn(Body):
    bet_id: Text
    round_id: Text
    win: MoneyBody
    game_id: Text | None = Field(
        default=None, description="with provably_fair: the round.completed event is sent"
    )
    provably_fair: ProvablyFairIn | None = None


class CancelIn(Body):
    bet_id: Text
    round_id: Text | None = None
    reason: Text | None = None


class CreditIn(Body):
    credit_id: Text
    player_id: Text
    amount: MoneyBody
    reason: Text
    campaign_id: Text | None = None


class AdjustmentIn(Body):
    amount: MoneyBody = Field(description="positive: a deposit; negative: a correction")
    reason: Text


class CurrencyIn(Body):
    code: Text
    exponent: StrictInt


# -- currencies -------------------------------------------------------------------------


@router.post("/currencies", status_code=201)
async def register_currency(
    body: CurrencyIn, c: ContainerDep, p: PrincipalDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Register a currency that is not in ISO 4217 (a token such as USDT, 6 decimals)."""
    currency = await c.wallet.register_currency(p.tenant_id, body.code, body.exponent, key=key)
    return {"code": currency.code, "exponent": currency.exponent}


@router.get("/currencies")
async def list_currencies(c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    """The currencies this tenant registered; every ISO 4217 currency is known besides."""
    found = await c.wallet.currencies(p.tenant_id)
    return {"data": [{"code": x.code, "exponent": x.exponent} for x in found]}


# -- players ----------------------------------------------------------------------------


@router.post("/players", status_code=201)
async def create_player(
    body: PlayerIn, c: ContainerDep, p: PrincipalDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Open a player's account in one currency, with a balance of zero."""
    answer = await c.wallet.create_player(p.tenant_id, body.player_id, body.currency, key=key)
    return {"player_id": answer.player_id, "currency": answer.currency, **_balances(answer)}


@router.get("/players/{player_id}/balance")
async def balance(player_id: str, c: ContainerDep, p: PrincipalDep) -> dict[str, Any]:
    account = await c.wallet.balance(p.tenant_id, player_id)
    return balance_out(account)


@router.get("/players/{player_id}/transactions")
async def transactions(
    player_id: str,
    c: ContainerDep,
    p: PrincipalDep,
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The player's ledger, newest first: each transaction with its postings."""
    page = await c.wallet.transactions(p.tenant_id, player_id, limit=limit, cursor=cursor)
    return {
        "data": [transaction_out(tx, page.exponent) for tx in page.data],
        "next_cursor": page.next_cursor,
    }


@router.post("/players/{player_id}/adjustments")
async def adjust(
    player_id: str,
    body: AdjustmentIn,
    c: ContainerDep,
    p: PrincipalDep,
    key: IdempotencyKey = None,
) -> dict[str, Any]:
    """An operator's deposit or correction, with its reason."""
    answer = await c.wallet.adjust(
        p.tenant_id,
        AdjustmentRequest(player_id, _money(body.amount), body.reason),
        key=key,
        trace_id=current_trace_id(),
    )
    return write_out(answer)


# -- sessions ---------------------------------------------------------------------------


@router.post("/sessions", status_code=201)
async def open_session(
    body: SessionIn, c: ContainerDep, p: PrincipalDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """The game launch: the game server then calls the wallet with this session id."""
    answer = await c.wallet.open_session(p.tenant_id, body.player_id, body.ttl_seconds, key=key)
    return {
        "session_id": answer.session_id,
        "player_id": answer.player_id,
        "expires_at": iso_ms(answer.expires_at_ms),
    }


# -- bets and credits -------------------------------------------------------------------


@router.post("/bets/authorize")
async def authorize(
    body: AuthorizeIn, c: ContainerDep, p: PrincipalDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Hold the stake: funds move from available to held, once per ``bet_id``."""
    answer = await c.wallet.authorize(
        p.tenant_id,
        AuthorizeRequest(
            session_id=body.session_id,
            bet_id=body.bet_id,
            round_id=body.round_id,
            amount=_money(body.amount),
            player_id=body.player_id,
        ),
        key=key,
        trace_id=current_trace_id(),
    )
    return write_out(answer)


@router.post("/bets/settle")
async def settle(
    body: SettleIn, c: ContainerDep, p: PrincipalDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Post the hold and credit the win (zero for a loss), atomically."""
    answer = await c.wallet.settle(
        p.tenant_id,
        SettleRequest(
            bet_id=body.bet_id,
            round_id=body.round_id,
            win=_money(body.win),
            game_id=body.game_id,
            provably_fair=None
            if body.provably_fair is None
            else ProvablyFair(
                body.provably_fair.server_seed_hash,
                body.provably_fair.client_seed,
                body.provably_fair.nonce,
            ),
        ),
        key=key,
        trace_id=current_trace_id(),
    )
    return write_out(answer)


@router.post("/bets/cancel")
async def cancel(
    body: CancelIn, c: ContainerDep, p: PrincipalDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Void the hold; an unknown bet is remembered as cancelled (404 BET_NOT_FOUND)."""
    answer = await c.wallet.cancel(
        p.tenant_id,
        CancelRequest(bet_id=body.bet_id, round_id=body.round_id, reason=body.reason),
        key=key,
        trace_id=current_trace_id(),
    )
    return write_out(answer)


@router.post("/credits")
async def credit(
    body: CreditIn, c: ContainerDep, p: PrincipalDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """A credit without a bet: a prize payout (reason ``prize_payout``), a bonus, a refund."""
    answer = await c.wallet.credit(
        p.tenant_id,
        CreditRequest(
            credit_id=body.credit_id,
            player_id=body.player_id,
            amount=_money(body.amount),
            reason=body.reason,
            campaign_id=body.campaign_id,
        ),
        key=key,
        trace_id=current_trace_id(),
    )
    return write_out(answer)


# -- rendering --------------------------------------------------------------------------


def write_out(answer: WalletAnswer) -> dict[str, Any]:
    """A write's answer: its status, the ids it made, and ``balance`` (available money)."""
    out: dict[str, Any] = {"status": answer.status}
    for name in ("hold_id", "bet_id", "credit_id", "transaction_id"):
        value = getattr(answer, name)
        if value is not None:
            out[name] = value
    out["player_id"] = answer.player_id
    out["balance"] = money_view(answer.available, answer.currency, answer.exponent)
    out["held"] = money_view(answer.held, answer.currency, answer.exponent)
    return out


def balance_out(account: PlayerAccount) -> dict[str, Any]:
    return {
        "player_id": account.player_id,
        "available": money_view(account.available, account.currency, account.exponent),
        "held": money_view(account.held, account.currency, account.exponent),
    }


def transaction_out(tx: WalletTransaction, exponent: int) -> dict[str, Any]:
    return {
        "id": tx.id,
        "kind": tx.kind,
        "reference": tx.reference,
        "round_id": tx.round_id,
        "amount": money_view(tx.amount, tx.currency, exponent),
        "available_after": money_view(tx.available_after, tx.currency, exponent),
        "held_after": money_view(tx.held_after, tx.currency, exponent),
        "reason": tx.reason,
        "trace_id": tx.trace_id,
        "created_at": iso_ms(tx.created_at_ms),
        "postings": [
            {"account": line.account, "amount": money_view(line.amount, tx.currency, exponent)}
            for line in tx.postings
        ],
    }


def _balances(answer: WalletAnswer) -> dict[str, Any]:
    return {
        "available": money_view(answer.available, answer.currency, answer.exponent),
        "held": money_view(answer.held, answer.currency, answer.exponent),
    }


def _money(body: MoneyBody) -> MoneyIn:
    return MoneyIn(currency=body.currency, amount=body.amount, minor_units=body.minor_units)
