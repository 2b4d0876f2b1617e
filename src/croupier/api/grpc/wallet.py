"""``wallet.v1.Wallet`` over gRPC: the same wallet service as the REST routes, called the
same way, so that a request means the same whichever way it came.

Every call: ``authorization: Bearer <key>`` metadata decides the tenant; ``x-trace-id``
metadata (else a W3C ``traceparent``'s trace id, else a new one) is the call's trace id and
comes back in the trailing metadata; a client deadline becomes the service's ``deadline``.
Every write: the request's ``idempotency_key`` field, or when it is empty the
``idempotency-key`` metadata. Empty strings and zero numbers are proto3's "not given", and
are passed on as ``None`` where the service has an optional value.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
import structlog
from google.protobuf.message import Message

from croupier.api.grpc._gen import wallet_pb2 as pb
from croupier.api.grpc.errors import GrpcError, from_croupier_error, internal_error
from croupier.domain.errors import CroupierError, ValidationFailed
from croupier.domain.money import format_minor
from croupier.domain.tenants import Principal
from croupier.domain.wallet import PlayerAccount, WalletAnswer
from croupier.services.tenants import TenantService
from croupier.services.wallet import (
    AdjustmentRequest,
    AuthorizeRequest,
    CancelRequest,
    CreditRequest,
    MoneyIn,
    ProvablyFair,
    SettleRequest,
    WalletService,
)

log = structlog.get_logger("croupier.api")

SERVICE = "wallet.v1.Wallet"

Res = TypeVar("Res", bound=Message)

_TRACE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


@dataclass(frozen=True)
class Call:
    """What every handler gets besides its request: who calls, and how."""

    principal: Principal
    trace_id: str
    #: ``time.monotonic()`` seconds when the client stops waiting; None: no deadline.
    deadline: float | None
    #: The ``idempotency-key`` metadata, or None.
    metadata_key: str | None

    def key(self, field: str) -> str | None:
        """The write's idempotency key: the request's field, else the metadata."""
        if field and self.metadata_key and field != self.metadata_key:
            raise ValidationFailed(
                "the idempotency_key field and the idempotency-key metadata differ; send one",
                field="idempotency_key",
            )
        return field or self.metadata_key


Handler = Callable[[Any, Call], Awaitable[Message]]


class WalletServicer:
    """One method per RPC, each a translation: request to service call, answer to reply."""

    def __init__(self, wallet: WalletService, tenants: TenantService) -> None:
        self.wallet = wallet
        self.tenants = tenants

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler that serves ``wallet.v1.Wallet`` on a grpc.aio server."""
        rpcs: dict[str, tuple[type[Message], Handler]] = {
            "AuthorizeBet": (pb.AuthorizeBetReq, self.authorize_bet),
            "SettleBet": (pb.SettleReq, self.settle_bet),
            "CancelBet": (pb.CancelBetReq, self.cancel_bet),
            "Credit": (pb.CreditReq, self.credit),
            "GetBalance": (pb.GetBalanceReq, self.get_balance),
            "CreateSession": (pb.CreateSessionReq, self.create_session),
            "CreatePlayer": (pb.CreatePlayerReq, self.create_player),
            "Adjust": (pb.AdjustReq, self.adjust),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    self._serve(handler),
                    request_deserializer=request.FromString,
                    response_serializer=_serialize,
                )
                for name, (request, handler) in rpcs.items()
            },
        )

    # -- the RPCs -------------------------------------------------------------------------

    async def authorize_bet(self, req: pb.AuthorizeBetReq, call: Call) -> pb.AuthorizeBetRes:
        answer = await self.wallet.authorize(
            call.principal.tenant_id,
            AuthorizeRequest(
                session_id=req.session_id,
                bet_id=req.bet_id,
                round_id=req.round_id,
                amount=_money_in(req, "amount"),
                player_id=req.player_id or None,
            ),
            key=call.key(req.idempotency_key),
            trace_id=call.trace_id,
            deadline=call.deadline,
        )
        return _reply(pb.AuthorizeBetRes, answer)

    async def settle_bet(self, req: pb.SettleReq, call: Call) -> pb.SettleRes:
        answer = await self.wallet.settle(
            call.principal.tenant_id,
            SettleRequest(
                bet_id=req.bet_id,
                round_id=req.round_id,
                win=_money_in(req, "win"),
                game_id=req.game_id or None,
                provably_fair=ProvablyFair(
                    req.provably_fair.server_seed_hash,
                    req.provably_fair.client_seed,
                    req.provably_fair.nonce,
                )
                if req.HasField("provably_fair")
                else None,
            ),
            key=call.key(req.idempotency_key),
            trace_id=call.trace_id,
            deadline=call.deadline,
        )
        return _reply(pb.SettleRes, answer)

    async def cancel_bet(self, req: pb.CancelBetReq, call: Call) -> pb.CancelBetRes:
        answer = await self.wallet.cancel(
            call.principal.tenant_id,
            CancelRequest(
                bet_id=req.bet_id, round_id=req.round_id or None, reason=req.reason or None
            ),
            key=call.key(req.idempotency_key),
            trace_id=call.trace_id,
            deadline=call.deadline,
        )
        return _reply(pb.CancelBetRes, answer)

    async def credit(self, req: pb.CreditReq, call: Call) -> pb.CreditRes:
        answer = await self.wallet.credit(
            call.principal.tenant_id,
            CreditRequest(
                credit_id=req.credit_id,
                player_id=req.player_id,
                amount=_money_in(req, "amount"),
                reason=req.reason,
                campaign_id=req.campaign_id or None,
            ),
            key=call.key(req.idempotency_key),
            trace_id=call.trace_id,
            deadline=call.deadline,
        )
        return _reply(pb.CreditRes, answer)

    async def adjust(self, req: pb.AdjustReq, call: Call) -> pb.AdjustRes:
        answer = await self.wallet.adjust(
            call.principal.tenant_id,
            AdjustmentRequest(req.player_id, _money_in(req, "amount"), req.reason),
            key=call.key(req.idempotency_key),
            trace_id=call.trace_id,
            deadline=call.deadline,
        )
        return _reply(pb.AdjustRes, answer)

    async def get_balance(self, req: pb.GetBalanceReq, call: Call) -> pb.GetBalanceRes:
        account = await self.wallet.balance(call.principal.tenant_id, req.player_id)
        return pb.GetBalanceRes(
            player_id=account.player_id,
            available=_money(account.available, account),
            held=_money(account.held, account),
        )

    async def create_session(self, req: pb.CreateSessionReq, call: Call) -> pb.CreateSessionRes:
        answer = await self.wallet.open_session(
            call.principal.tenant_id,
            req.player_id,
            req.ttl_seconds or None,
            key=call.key(req.idempotency_key),
            deadline=call.deadline,
        )
        return pb.CreateSessionRes(
            session_id=answer.session_id,
            player_id=answer.player_id,
            expires_at_ms=answer.expires_at_ms,
        )

    async def create_player(self, req: pb.CreatePlayerReq, call: Call) -> pb.CreatePlayerRes:
        answer = await self.wallet.create_player(
            call.principal.tenant_id,
            req.player_id,
            req.currency,
            key=call.key(req.idempotency_key),
            deadline=call.deadline,
        )
        return pb.CreatePlayerRes(
            player_id=answer.player_id,
            currency=answer.currency,
            available=_available(answer),
            held=_held(answer),
        )

    # -- every call -----------------------------------------------------------------------

    def _serve(
        self, handler: Handler
    ) -> Callable[[Message, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]:
        async def serve(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            metadata = _metadata(context)
            trace_id = _trace_id(metadata)
            failure: GrpcError
            try:
                call = Call(
                    principal=await self.tenants.authenticate(_bearer(metadata)),
                    trace_id=trace_id,
                    deadline=_deadline(context),
                    metadata_key=metadata.get("idempotency-key") or None,
                )
                reply = await handler(request, call)
            except CroupierError as exc:
                failure = from_croupier_error(exc, trace_id)
            except Exception:
                log.exception("unhandled error", trace_id=trace_id, rpc=handler.__name__)
                failure = internal_error(trace_id)
            else:
                context.set_trailing_metadata((("x-trace-id", trace_id),))
                return reply
            await context.abort(failure.code, failure.message, failure.trailing_metadata)

        return serve


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The invocation metadata as text, keys in lower case (the first of repeated keys)."""
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            found.setdefault(key.lower(), value)
    return found


def _bearer(metadata: Mapping[str, str]) -> str | None:
    scheme, _, key = metadata.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def _trace_id(metadata: Mapping[str, str]) -> str:
    """The rule of the REST API: ``x-trace-id``, else ``traceparent``, else a new one."""
    given = metadata.get("x-trace-id", "").strip()
    if _TRACE_ID.match(given):
        return given
    parent = _TRACEPARENT.match(metadata.get("traceparent", "").strip())
    if parent:
        return parent.group(1)
    return uuid.uuid4().hex


def _deadline(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _money_in(req: Message, field: str) -> MoneyIn:
    """A request's Money, as the service takes it: ``amount`` (major units) when given,
    else ``minor_units``; both given is the service's "not both" refusal."""
    if not req.HasField(field):
        raise ValidationFailed(f"{field} is required", field=field)
    money: pb.Money = getattr(req, field)
    amount = money.amount or None
    minor = money.minor_units if amount is None or money.minor_units != 0 else None
    return MoneyIn(currency=money.currency, amount=amount, minor_units=minor)


def _money(minor_units: int, account: PlayerAccount | WalletAnswer) -> pb.Money:
    return pb.Money(
        minor_units=minor_units,
        currency=account.currency,
        amount=format_minor(minor_units, account.exponent),
    )


def _reply(message: type[Res], answer: WalletAnswer) -> Res:
    """A write's answer as ``message``: the fields of the answer that the message has (the
    answers differ only in which ids they carry). Ids not made are left empty."""
    fields = message.DESCRIPTOR.fields_by_name
    values: dict[str, Any] = {
        "status": answer.status,
        "player_id": answer.player_id,
        "balance": _available(answer),
        "held": _held(answer),
        "hold_id": answer.hold_id or "",
        "bet_id": answer.bet_id or "",
        "credit_id": answer.credit_id or "",
        "transaction_id": answer.transaction_id or "",
    }
    return message(**{name: value for name, value in values.items() if name in fields})


def _available(answer: WalletAnswer) -> pb.Money:
    return _money(answer.available, answer)


def _held(answer: WalletAnswer) -> pb.Money:
    return _money(answer.held, answer)
