"""``wallet.v1.Wallet`` over gRPC: a real grpc.aio server on 127.0.0.1 (a free port) around
the test's container, and a grpc.aio client channel, on both stores.

Before a wallet write, each test makes a player, gives it money (``adjust``) and opens a
session, through the service or through the RPCs themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
import grpc.aio
import httpx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_status import rpc_status
from grpc_tools import protoc
from sqlalchemy.engine import make_url

from croupier.api.grpc._gen import wallet_pb2 as pb
from croupier.api.grpc.errors import GRPC_STATUS, INTERNAL_MESSAGE, from_croupier_error
from croupier.api.grpc.server import GrpcServer
from croupier.api.rest.app import create_app
from croupier.bootstrap import Container, build
from croupier.config import Settings
from croupier.domain.clock import ManualClock
from croupier.domain.errors import DeadlineExceeded, InsufficientFunds
from croupier.services.wallet import AdjustmentRequest, MoneyIn
from tests.conftest import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "grpc.md"
DOC_CLIENT = re.compile(
    r"<!-- tested: python play_round -->\s*\n```python\n(?P<code>.*?)\n```", re.DOTALL
)
PROTO = ROOT / "protos" / "wallet" / "v1" / "wallet.proto"
GEN = ROOT / "src" / "croupier" / "api" / "grpc" / "_gen" / "wallet_pb2.py"
AUTH = (("authorization", f"Bearer {ADMIN_KEY}"),)
HEX32 = re.compile(r"^[0-9a-f]{32}$")

#: The first version of the proto, as game servers were built from it. Only Money,
#: AuthorizeBetReq, AuthorizeBetRes and the two RPCs were in it; SettleReq and SettleRes
#: hold what a game server built then sends and reads.
SEED_PROTO = """
syntax = "proto3";
package wallet.v1;
message Money { int64 minor_units = 1; string currency = 2; }
message AuthorizeBetReq { string session_id = 1; string bet_id = 2; string round_id = 3;
                          Money amount = 4; string idempotency_key = 5; }
message AuthorizeBetRes { string status = 1; string hold_id = 2; }
message SettleReq { string bet_id = 1; string round_id = 2; Money win = 3;
                    string idempotency_key = 4; }
message SettleRes { string status = 1; Money balance = 2; }
service Wallet {
  rpc AuthorizeBet(AuthorizeBetReq) returns (AuthorizeBetRes);
  rpc SettleBet(SettleReq) returns (SettleRes);
}
"""

M = TypeVar("M", bound=Message)
F = descriptor_pb2.FieldDescriptorProto


# -- the server and a client ------------------------------------------------------------


@pytest.fixture
async def server(container: Container) -> AsyncIterator[GrpcServer]:
    s = GrpcServer(container, "127.0.0.1", 0)
    await s.start()
    yield s
    await s.stop(0)


@dataclass
class Wallet:
    """A client of ``wallet.v1.Wallet`` on one channel, with the admin key unless told."""

    channel: grpc.aio.Channel

    async def call(
        self,
        method: str,
        request: Message,
        answer: type[M],
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        deadline_s: float | None = None,
    ) -> tuple[M, dict[str, str]]:
        """The answer and the trailing metadata."""
        rpc = self.channel.unary_unary(
            f"/wallet.v1.Wallet/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=answer.FromString,
        )
        call = rpc(
            request, metadata=AUTH if metadata is None else tuple(metadata), timeout=deadline_s
        )
        reply: M = await call
        return reply, _text(await call.trailing_metadata())

    async def fails(
        self,
        method: str,
        request: Message,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        deadline_s: float | None = None,
    ) -> Failure:
        """The call's error, with the ErrorInfo of its rich status (checked for shape)."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.call(method, request, Message, metadata=metadata, deadline_s=deadline_s)
        return Failure.of(caught.value)

    async def authorize(self, req: pb.AuthorizeBetReq, **kw: Any) -> pb.AuthorizeBetRes:
        return (await self.call("AuthorizeBet", req, pb.AuthorizeBetRes, **kw))[0]

    async def settle(self, req: pb.SettleReq, **kw: Any) -> pb.SettleRes:
        return (await self.call("SettleBet", req, pb.SettleRes, **kw))[0]


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    details: str
    trailers: dict[str, str]
    info: error_details_pb2.ErrorInfo

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> Failure:
        # grpcio-status's reader also checks that the status matches the call's code and
        # details, as any client using it will.
        status = rpc_status.from_call(error)
        assert status is not None, (error.code(), error.details(), error.trailing_metadata())
        assert len(status.details) == 1
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert info.domain == "croupier"
        assert info.metadata["retryable"] in ("true", "false")
        trailers = _text(error.trailing_metadata())
        assert info.metadata["trace_id"] == trailers["x-trace-id"]
        return cls(error.code(), error.details() or "", trailers, info)

    @property
    def reason(self) -> str:
        return self.info.reason


def _text(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}


@pytest.fixture
async def wallet(server: GrpcServer) -> AsyncIterator[Wallet]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield Wallet(channel)


async def funded_session(container: Container, player: str = "p1", minor: int = 1000) -> str:
    """A player with ``minor`` EUR cents available, and a session id of theirs."""
    w = container.wallet
    await w.create_player("default", player, "EUR", key=f"player-{player}")
    if minor:
        await w.adjust(
            "default",
            AdjustmentRequest(player, MoneyIn("EUR", minor_units=minor), "deposit"),
            key=f"deposit-{player}",
            trace_id=None,
        )
    session = await w.open_session("default", player, None, key=f"session-{player}")
    return session.session_id


def eur(minor: int) -> pb.Money:
    return pb.Money(minor_units=minor, currency="EUR")


def bet(
    session_id: str, bet_id: str = "b1", minor: int = 200, key: str = "", **kw: str
) -> pb.AuthorizeBetReq:
    return pb.AuthorizeBetReq(
        session_id=session_id,
        bet_id=bet_id,
        round_id="r1",
        amount=eur(minor),
        idempotency_key=key,
        **kw,
    )


async def balances(container: Container, player: str = "p1") -> tuple[int, int]:
    account = await container.wallet.balance("default", player)
    return account.available, account.held


# -- the contract -----------------------------------------------------------------------


def _fields(message: str) -> dict[int, tuple[str, int, str]]:
    found = pb.DESCRIPTOR.message_types_by_name[message]
    return {
        f.number: (f.name, f.type, f.message_type.full_name if f.message_type else "")
        for f in found.fields
    }


def test_the_proto_keeps_the_seed_field_numbers_names_and_types() -> None:
    assert pb.DESCRIPTOR.package == "wallet.v1"
    proto = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert proto.syntax == "proto3"
    string, message, int64 = F.TYPE_STRING, F.TYPE_MESSAGE, F.TYPE_INT64
    seed = {
        "Money": {1: ("minor_units", int64, ""), 2: ("currency", string, "")},
        "AuthorizeBetReq": {
            1: ("session_id", string, ""),
            2: ("bet_id", string, ""),
            3: ("round_id", string, ""),
            4: ("amount", message, "wallet.v1.Money"),
            5: ("idempotency_key", string, ""),
        },
        "AuthorizeBetRes": {1: ("status", string, ""), 2: ("hold_id", string, "")},
        "SettleReq": {
            1: ("bet_id", string, ""),
            2: ("round_id", string, ""),
            3: ("win", message, "wallet.v1.Money"),
            4: ("idempotency_key", string, ""),
        },
        "SettleRes": {1: ("status", string, ""), 2: ("balance", message, "wallet.v1.Money")},
    }
    for name, fields in seed.items():
        now = _fields(name)
        assert {n: now[n] for n in fields if n in now} == fields, name
        # Whatever came later came with new numbers.
        assert all(n > max(fields) for n in set(now) - set(fields)), name
    service = pb.DESCRIPTOR.services_by_name["Wallet"]
    assert service.full_name == "wallet.v1.Wallet"
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods["AuthorizeBet"] == ("AuthorizeBetReq", "AuthorizeBetRes")
    assert methods["SettleBet"] == ("SettleReq", "SettleRes")
    assert set(methods) >= {"CancelBet", "Credit", "GetBalance", "CreateSession"}
    # Every write takes an idempotency key in its request.
    for m in service.methods:
        if m.name != "GetBalance":
            assert "idempotency_key" in m.input_type.fields_by_name, m.name


def _compile(proto_root: Path, name: str, out: Path) -> descriptor_pb2.FileDescriptorProto:
    """``name`` under ``proto_root`` compiled by grpc_tools' protoc into a descriptor."""
    code = protoc.main(
        ["protoc", f"-I{proto_root}", f"--descriptor_set_out={out}", str(proto_root / name)]
    )
    assert code == 0, f"protoc failed on {name}"
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert len(files) == 1
    return files[0]


def test_the_generated_code_is_what_the_proto_says(tmp_path: Path) -> None:
    """``make protos`` was run after the last change to the proto: the descriptor compiled
    into ``_gen`` is the one the proto compiles to now."""
    compiled = _compile(ROOT / "protos", "wallet/v1/wallet.proto", tmp_path / "wallet.pb")
    generated = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    # The Python generator leaves out the JSON names protoc derives from the field names.
    _drop_json_names(compiled.message_type)
    _drop_json_names(generated.message_type)
    assert generated == compiled, "src/croupier/api/grpc/_gen is stale: run `make protos`"
    stubs = GEN.with_suffix(".pyi").read_text()
    for message in compiled.message_type:
        assert f"class {message.name}(_message.Message):" in stubs, message.name
        for field in message.field:
            assert f"    {field.name}: " in stubs, f"{message.name}.{field.name}"


def _drop_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


def test_the_protobuf_runtime_floor_is_not_below_the_generated_code() -> None:
    """The generated module refuses an older protobuf runtime when it is imported."""
    made = re.search(r"Protobuf Python Version: (\d+)\.(\d+)\.(\d+)", GEN.read_text())
    assert made is not None
    floor = re.search(
        r'"protobuf>=(\d+)\.(\d+)(?:\.(\d+))?"', (ROOT / "pyproject.toml").read_text()
    )
    assert floor is not None
    gen = tuple(int(x) for x in made.groups())
    pinned = tuple(int(x or 0) for x in floor.groups())
    assert pinned >= gen, f"pyproject.toml: protobuf>={'.'.join(map(str, gen))} at least"


@pytest.mark.parametrize(
    ("codes", "status"),
    [
        (
            "VALIDATION_FAILED INVALID_AMOUNT AMOUNT_PRECISION UNKNOWN_CURRENCY CURRENCY_MISMATCH "
            "ROUND_MISMATCH PLAYER_MISMATCH IDEMPOTENCY_KEY_REQUIRED IDEMPOTENCY_MISMATCH",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ("NOT_FOUND PLAYER_NOT_FOUND BET_NOT_FOUND", grpc.StatusCode.NOT_FOUND),
        ("DUPLICATE", grpc.StatusCode.ALREADY_EXISTS),
        (
            "INSUFFICIENT_FUNDS BET_CANCELLED BET_ALREADY_SETTLED",
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        ("IDEMPOTENCY_IN_PROGRESS CONCURRENT_WRITE", grpc.StatusCode.ABORTED),
        ("UNAUTHORIZED SESSION_INVALID", grpc.StatusCode.UNAUTHENTICATED),
        ("FORBIDDEN", grpc.StatusCode.PERMISSION_DENIED),
        ("DEADLINE_EXCEEDED", grpc.StatusCode.DEADLINE_EXCEEDED),
        ("UNAVAILABLE", grpc.StatusCode.UNAVAILABLE),
        ("INTERNAL", grpc.StatusCode.INTERNAL),
    ],
)
def test_each_croupier_code_has_its_grpc_status(codes: str, status: grpc.StatusCode) -> None:
    for code in codes.split():
        assert GRPC_STATUS[code] == status, code


def test_an_error_carries_its_code_retryable_trace_id_and_details_in_error_info() -> None:
    error = from_croupier_error(DeadlineExceeded("too late"), "t-1")
    assert (error.code, error.message) == (grpc.StatusCode.DEADLINE_EXCEEDED, "too late")
    trailers = dict(error.trailing_metadata)
    assert trailers["x-trace-id"] == "t-1"
    raw = trailers["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    status = status_pb2.Status.FromString(raw)
    assert (status.code, status.message) == (grpc.StatusCode.DEADLINE_EXCEEDED.value[0], "too late")
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "DEADLINE_EXCEEDED"
    assert dict(info.metadata) == {"retryable": "true", "trace_id": "t-1"}
    funds = from_croupier_error(
        InsufficientFunds("no", details={"balance": {"minor_units": 5, "currency": "EUR"}}), "t"
    )
    assert funds.code == grpc.StatusCode.FAILED_PRECONDITION
    unknown = from_croupier_error(_Odd("odd"), "t")
    assert unknown.code == grpc.StatusCode.INTERNAL


class _Odd(DeadlineExceeded):
    code = "SOMETHING_NEW"


# -- a game server built from the first proto -------------------------------------------


def _seed_classes(tmp_path: Path) -> dict[str, type[Message]]:
    """The messages of the seed's proto, compiled now, in a pool of their own."""
    root = tmp_path / "seed"
    (root / "wallet" / "v1").mkdir(parents=True)
    (root / "wallet" / "v1" / "wallet.proto").write_text(SEED_PROTO)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_compile(root, "wallet/v1/wallet.proto", tmp_path / "seed.pb"))
    names = ("Money", "AuthorizeBetReq", "AuthorizeBetRes", "SettleReq", "SettleRes")
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"wallet.v1.{n}"))
        for n in names
    }


async def test_a_game_server_using_only_the_seeds_fields_authorizes_and_settles(
    container: Container, wallet: Wallet, tmp_path: Path
) -> None:
    seed = _seed_classes(tmp_path)
    session = await funded_session(container)
    money = seed["Money"](minor_units=200, currency="EUR")
    request = seed["AuthorizeBetReq"](
        session_id=session, bet_id="b1", round_id="r1", amount=money, idempotency_key="a-1"
    )
    authorized, _ = await wallet.call("AuthorizeBet", request, seed["AuthorizeBetRes"])
    fields = {f.name: v for f, v in authorized.ListFields()}
    assert fields["status"] == "authorized"
    assert str(fields["hold_id"]).startswith("hld_")
    assert await balances(container) == (800, 200)

    win = seed["Money"](minor_units=500, currency="EUR")
    settle = seed["SettleReq"](bet_id="b1", round_id="r1", win=win, idempotency_key="s-1")
    settled, _ = await wallet.call("SettleBet", settle, seed["SettleRes"])
    fields = {f.name: v for f, v in settled.ListFields()}
    assert fields["status"] == "settled"
    balance = {f.name: v for f, v in fields["balance"].ListFields()}
    assert balance == {"minor_units": 1300, "currency": "EUR"}
    assert await balances(container) == (1300, 0)


async def test_the_answers_carry_the_balances_and_ids(container: Container, wallet: Wallet) -> None:
    session = await funded_session(container)
    held = await wallet.authorize(bet(session, key="a-1", player_id="p1"))
    assert held.status == "authorized"
    assert (held.bet_id, held.player_id) == ("b1", "p1")
    assert held.transaction_id.startswith("wtx_")
    assert held.balance == pb.Money(minor_units=800, currency="EUR", amount="8.00")
    assert held.held == pb.Money(minor_units=200, currency="EUR", amount="2.00")
    settled = await wallet.settle(
        pb.SettleReq(bet_id="b1", round_id="r1", win=eur(0), idempotency_key="s-1")
    )
    assert (settled.status, settled.hold_id) == ("settled", held.hold_id)
    assert settled.balance.minor_units == 800
    assert settled.held.minor_units == 0


async def test_a_settle_with_its_rounds_details_publishes_round_completed(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    await wallet.authorize(bet(session, key="a-1"))
    fair = pb.ProvablyFair(server_seed_hash="9f86d0", client_seed="c1f8a3", nonce=42)
    await wallet.settle(
        pb.SettleReq(
            bet_id="b1",
            round_id="r1",
            win=eur(500),
            idempotency_key="s-1",
            game_id="book-of-dice",
            provably_fair=fair,
        )
    )
    page = await container.publish.list(
        "default", event_type="round.completed", since_ms=None, limit=10, cursor=None
    )
    [completed] = page.data
    assert completed.data["gameId"] == "book-of-dice"
    assert completed.data["provablyFair"] == {
        "serverSeedHash": "9f86d0",
        "clientSeed": "c1f8a3",
        "nonce": 42,
    }


# -- idempotency ------------------------------------------------------------------------


async def test_a_replay_returns_the_same_hold_id_and_moves_the_money_once(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    first = await wallet.authorize(bet(session, key="a-1"))
    again = await wallet.authorize(bet(session, key="a-1"))
    assert again == first
    assert await balances(container) == (800, 200)


async def test_the_idempotency_key_metadata_works_when_the_field_is_empty(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    metadata = (*AUTH, ("idempotency-key", "meta-1"))
    first = await wallet.authorize(bet(session), metadata=metadata)
    assert first.status == "authorized"
    assert await wallet.authorize(bet(session), metadata=metadata) == first
    # The key was kept: another request under it is refused.
    other = await wallet.fails("AuthorizeBet", bet(session, bet_id="b2"), metadata=metadata)
    assert (other.code, other.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_MISMATCH")
    # The same key in the field and in the metadata is one key.
    same = await wallet.authorize(bet(session, key="meta-1"), metadata=metadata)
    assert same == first
    assert await balances(container) == (800, 200)


async def test_a_write_without_any_idempotency_key_is_invalid_argument(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    failure = await wallet.fails("AuthorizeBet", bet(session))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == "IDEMPOTENCY_KEY_REQUIRED"
    assert await balances(container) == (1000, 0)


async def test_a_field_key_and_a_different_metadata_key_are_invalid_argument(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    metadata = (*AUTH, ("idempotency-key", "meta-1"))
    failure = await wallet.fails("AuthorizeBet", bet(session, key="field-1"), metadata=metadata)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == "VALIDATION_FAILED"
    assert failure.info.metadata["field"] == "idempotency_key"
    assert await balances(container) == (1000, 0)


async def test_a_bet_authorized_over_rest_replayed_over_grpc_with_the_same_key_answers_the_same(
    container: Container, wallet: Wallet, client: httpx.AsyncClient
) -> None:
    session = await funded_session(container)
    body = {
        "session_id": session,
        "bet_id": "b1",
        "round_id": "r1",
        # Major units over REST, minor units over gRPC: one request all the same.
        "amount": {"amount": "2.00", "currency": "EUR"},
    }
    rest = await client.post("/v1/bets/authorize", json=body, headers={"X-Idempotency-Key": "k-1"})
    assert rest.status_code == 200, rest.text
    answer = rest.json()
    replayed = await wallet.authorize(bet(session, key="k-1"))
    assert replayed.status == answer["status"] == "authorized"
    assert replayed.hold_id == answer["hold_id"]
    assert replayed.transaction_id == answer["transaction_id"]
    assert replayed.balance.minor_units == answer["balance"]["minor_units"] == 800
    assert await balances(container) == (800, 200)
    # And the other way: settled over gRPC, replayed over REST.
    settle = pb.SettleReq(bet_id="b1", round_id="r1", win=eur(350), idempotency_key="k-2")
    settled = await wallet.settle(settle)
    rest = await client.post(
        "/v1/bets/settle",
        json={"bet_id": "b1", "round_id": "r1", "win": {"minor_units": 350, "currency": "EUR"}},
        headers={"X-Idempotency-Key": "k-2"},
    )
    assert rest.status_code == 200, rest.text
    assert rest.json()["transaction_id"] == settled.transaction_id
    assert await balances(container) == (1150, 0)


# -- errors -----------------------------------------------------------------------------


async def test_duplicate_maps_to_already_exists_with_reason_duplicate(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    await wallet.authorize(bet(session, key="a-1"))
    failure = await wallet.fails("AuthorizeBet", bet(session, key="a-2"))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    assert failure.reason == "DUPLICATE"
    assert failure.info.metadata["retryable"] == "false"
    assert failure.details == "Bet already authorized"
    assert await balances(container) == (800, 200)


async def test_insufficient_funds_is_failed_precondition_with_the_balance_in_error_info(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container, minor=150)
    failure = await wallet.fails("AuthorizeBet", bet(session, minor=200, key="a-1"))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason == "INSUFFICIENT_FUNDS"
    meta = failure.info.metadata
    assert meta["balance_minor_units"] == "150"
    assert meta["balance_currency"] == "EUR"
    assert meta["balance_amount"] == "1.50"
    assert "insufficient funds" in failure.details
    assert await balances(container) == (150, 0)


async def test_an_unknown_session_is_unauthenticated_with_session_invalid(
    container: Container, wallet: Wallet
) -> None:
    await funded_session(container)
    failure = await wallet.fails("AuthorizeBet", bet("ses_unknown", key="a-1"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_INVALID")
    assert await balances(container) == (1000, 0)


async def test_a_player_other_than_the_sessions_is_invalid_argument(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    failure = await wallet.fails("AuthorizeBet", bet(session, key="a-1", player_id="p2"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PLAYER_MISMATCH")
    assert failure.info.metadata["field"] == "player_id"


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer ck_not_a_key_0123456789abcdefghijklmnopqrst"),),
        (("authorization", f"Basic {ADMIN_KEY}"),),
        (("authorization", "Bearer "),),
    ],
    ids=["missing", "unknown", "not-bearer", "empty"],
)
async def test_a_missing_or_bad_bearer_key_is_unauthenticated(
    container: Container, wallet: Wallet, metadata: tuple[tuple[str, str], ...]
) -> None:
    session = await funded_session(container)
    failure = await wallet.fails("AuthorizeBet", bet(session, key="a-1"), metadata=metadata)
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHORIZED")
    assert ADMIN_KEY not in failure.details
    assert await balances(container) == (1000, 0)


async def test_a_key_of_another_tenant_does_not_see_this_tenants_players(
    container: Container, wallet: Wallet
) -> None:
    await funded_session(container)
    principal = await container.tenants.authenticate(ADMIN_KEY)
    other = await container.tenants.create_tenant(principal, "brand-b")
    issued = await container.tenants.create_key(principal, other.id)
    metadata = (("authorization", f"Bearer {issued.secret}"),)
    failure = await wallet.fails("GetBalance", pb.GetBalanceReq(player_id="p1"), metadata=metadata)
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "PLAYER_NOT_FOUND")


async def test_an_unexpected_failure_is_internal_and_tells_nothing_of_itself(
    container: Container, wallet: Wallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret: the store's password is hunter2")

    monkeypatch.setattr(container.wallet, "balance", broken)
    failure = await wallet.fails("GetBalance", pb.GetBalanceReq(player_id="p1"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    assert failure.details == INTERNAL_MESSAGE
    assert "hunter2" not in repr(failure)


async def test_money_in_major_units_is_read_exactly(container: Container, wallet: Wallet) -> None:
    session = await funded_session(container)
    major = pb.Money(amount="2.50", currency="EUR")
    req = pb.AuthorizeBetReq(
        session_id=session, bet_id="b1", round_id="r1", amount=major, idempotency_key="a-1"
    )
    assert (await wallet.authorize(req)).held.minor_units == 250
    too_fine = pb.Money(amount="2.505", currency="EUR")
    req = pb.AuthorizeBetReq(
        session_id=session, bet_id="b2", round_id="r1", amount=too_fine, idempotency_key="a-2"
    )
    failure = await wallet.fails("AuthorizeBet", req)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_PRECISION")
    assert failure.info.metadata["field"] == "amount.amount"
    both = pb.Money(amount="2.00", minor_units=200, currency="EUR")
    req = pb.AuthorizeBetReq(
        session_id=session, bet_id="b3", round_id="r1", amount=both, idempotency_key="a-3"
    )
    failure = await wallet.fails("AuthorizeBet", req)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AMOUNT")
    missing = pb.AuthorizeBetReq(
        session_id=session, bet_id="b4", round_id="r1", idempotency_key="a-4"
    )
    failure = await wallet.fails("AuthorizeBet", missing)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert failure.info.metadata["field"] == "amount"
    assert await balances(container) == (750, 250)


# -- trace ids --------------------------------------------------------------------------


async def test_x_trace_id_is_echoed_in_the_trailing_metadata(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    metadata = (*AUTH, ("x-trace-id", "trace-abc.1"))
    _, trailers = await wallet.call(
        "AuthorizeBet", bet(session, key="a-1"), pb.AuthorizeBetRes, metadata=metadata
    )
    assert trailers["x-trace-id"] == "trace-abc.1"
    # The ledger keeps it with the transaction.
    page = await container.wallet.transactions("default", "p1", limit=1, cursor=None)
    assert page.data[0].trace_id == "trace-abc.1"

    failure = await wallet.fails("AuthorizeBet", bet(session, key="a-2"), metadata=metadata)
    assert failure.trailers["x-trace-id"] == "trace-abc.1"
    assert failure.info.metadata["trace_id"] == "trace-abc.1"


async def test_a_trace_id_is_made_when_the_call_has_none(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    _, trailers = await wallet.call("AuthorizeBet", bet(session, key="a-1"), pb.AuthorizeBetRes)
    assert HEX32.match(trailers["x-trace-id"])
    _, again = await wallet.call("AuthorizeBet", bet(session, key="a-1"), pb.AuthorizeBetRes)
    assert HEX32.match(again["x-trace-id"])
    assert again["x-trace-id"] != trailers["x-trace-id"]
    failure = await wallet.fails("GetBalance", pb.GetBalanceReq(player_id="nobody"))
    assert HEX32.match(failure.trailers["x-trace-id"])


# -- deadlines --------------------------------------------------------------------------


async def test_a_deadline_that_passes_before_the_work_begins_leaves_no_money_moved(
    container: Container, wallet: Wallet, backend: str, settings: Settings
) -> None:
    session = await funded_session(container)
    # Authenticate once, so that the key is known without the store.
    await wallet.call("GetBalance", pb.GetBalanceReq(player_id="p1"), pb.GetBalanceRes)
    async with _store_held(container, backend, settings):
        failure = await asyncio.wait_for(
            _deadline_failure(wallet, bet(session, key="a-1"), deadline_s=0.3), 5
        )
        assert failure == grpc.StatusCode.DEADLINE_EXCEEDED
    # Whatever the authorize left queued has run by the time a later write has.
    await container.store.run(lambda _: None)
    # It never began: nothing moved, and the key keeps no answer.
    assert await balances(container) == (1000, 0)
    retried = await wallet.authorize(bet(session, key="a-1"))
    assert retried.status == "authorized"
    assert await balances(container) == (800, 200)


@contextlib.asynccontextmanager
async def _store_held(
    container: Container, backend: str, settings: Settings
) -> AsyncIterator[None]:
    """Writes wait until the block ends.

    On SQLite, another connection holds the write lock: the authorize's transaction starts
    and waits for the lock inside it, where the caller giving up cannot stop it, so only
    the deadline it was given keeps the work from beginning once the lock is free. On
    PostgreSQL the store's own thread is kept busy instead.
    """
    if backend == "sqlite":
        path = make_url(settings.database_url).database
        assert path is not None
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            other.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                other.execute("ROLLBACK")
        finally:
            other.close()
        return
    release = threading.Event()
    busy = asyncio.ensure_future(container.store.run(lambda _: release.wait(10)))
    try:
        yield
    finally:
        release.set()
        await busy


async def _deadline_failure(wallet: Wallet, request: Message, *, deadline_s: float) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await wallet.call("AuthorizeBet", request, pb.AuthorizeBetRes, deadline_s=deadline_s)
    return caught.value.code()


async def test_a_call_without_a_deadline_gives_the_service_none(
    container: Container, wallet: Wallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[float | None] = []
    create = container.wallet.create_player

    async def spy(*args: Any, deadline: float | None = None, **kw: Any) -> Any:
        seen.append(deadline)
        return await create(*args, deadline=deadline, **kw)

    monkeypatch.setattr(container.wallet, "create_player", spy)
    req = pb.CreatePlayerReq(player_id="p1", currency="EUR", idempotency_key="c-1")
    await wallet.call("CreatePlayer", req, pb.CreatePlayerRes)
    req = pb.CreatePlayerReq(player_id="p2", currency="EUR", idempotency_key="c-2")
    await wallet.call("CreatePlayer", req, pb.CreatePlayerRes, deadline_s=30)
    assert seen[0] is None
    assert seen[1] is not None
    assert 25 < seen[1] - time.monotonic() <= 31


# -- the other RPCs ---------------------------------------------------------------------


async def test_a_player_plays_over_grpc_only(container: Container, wallet: Wallet) -> None:
    """CreatePlayer, Adjust, CreateSession, AuthorizeBet, CancelBet, Credit, GetBalance."""
    created, _ = await wallet.call(
        "CreatePlayer",
        pb.CreatePlayerReq(player_id="p1", currency="EUR", idempotency_key="c-1"),
        pb.CreatePlayerRes,
    )
    assert (created.player_id, created.currency) == ("p1", "EUR")
    assert created.available == pb.Money(minor_units=0, currency="EUR", amount="0.00")

    adjusted, _ = await wallet.call(
        "Adjust",
        pb.AdjustReq(
            player_id="p1", amount=pb.Money(amount="10.00", currency="EUR"), reason="deposit"
        ),
        pb.AdjustRes,
        metadata=(*AUTH, ("idempotency-key", "d-1")),
    )
    assert adjusted.status == "adjusted"
    assert adjusted.balance.minor_units == 1000

    session, _ = await wallet.call(
        "CreateSession",
        pb.CreateSessionReq(player_id="p1", ttl_seconds=60, idempotency_key="s-1"),
        pb.CreateSessionRes,
    )
    assert session.session_id.startswith("ses_")
    assert session.player_id == "p1"
    assert isinstance(container.clock, ManualClock)
    assert session.expires_at_ms == container.clock.now_ms() + 60_000

    held = await wallet.authorize(bet(session.session_id, key="a-1"))
    cancelled, _ = await wallet.call(
        "CancelBet",
        pb.CancelBetReq(bet_id="b1", round_id="r1", reason="round_voided", idempotency_key="x-1"),
        pb.CancelBetRes,
    )
    assert (cancelled.status, cancelled.hold_id, cancelled.bet_id) == (
        "cancelled",
        held.hold_id,
        "b1",
    )
    assert cancelled.balance.minor_units == 1000
    assert cancelled.held.minor_units == 0
    settled = await wallet.fails(
        "SettleBet", pb.SettleReq(bet_id="b1", round_id="r1", win=eur(0), idempotency_key="s-9")
    )
    assert (settled.code, settled.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BET_CANCELLED")
    unknown = await wallet.fails(
        "CancelBet", pb.CancelBetReq(bet_id="never", idempotency_key="x-2")
    )
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "BET_NOT_FOUND")

    credit = pb.CreditReq(
        credit_id="cr-1",
        player_id="p1",
        amount=eur(500),
        reason="prize_payout",
        campaign_id="camp-1",
        idempotency_key="cr-k1",
    )
    credited, _ = await wallet.call("Credit", credit, pb.CreditRes)
    assert (credited.status, credited.credit_id) == ("credited", "cr-1")
    assert credited.balance == pb.Money(minor_units=1500, currency="EUR", amount="15.00")
    credit.idempotency_key = "cr-k2"
    again = await wallet.fails("Credit", credit)
    assert (again.code, again.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE")

    balance, _ = await wallet.call("GetBalance", pb.GetBalanceReq(player_id="p1"), pb.GetBalanceRes)
    assert balance.player_id == "p1"
    assert balance.available == pb.Money(minor_units=1500, currency="EUR", amount="15.00")
    assert balance.held == pb.Money(minor_units=0, currency="EUR", amount="0.00")
    assert await balances(container) == (1500, 0)

    nobody = await wallet.fails("GetBalance", pb.GetBalanceReq(player_id="nobody"))
    assert (nobody.code, nobody.reason) == (grpc.StatusCode.NOT_FOUND, "PLAYER_NOT_FOUND")
    dup = await wallet.fails(
        "CreatePlayer", pb.CreatePlayerReq(player_id="p1", currency="EUR", idempotency_key="c-2")
    )
    assert (dup.code, dup.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE")


async def test_settling_a_settled_bet_is_failed_precondition(
    container: Container, wallet: Wallet
) -> None:
    session = await funded_session(container)
    await wallet.authorize(bet(session, key="a-1"))
    await wallet.settle(pb.SettleReq(bet_id="b1", round_id="r1", win=eur(0), idempotency_key="s-1"))
    failure = await wallet.fails(
        "SettleBet", pb.SettleReq(bet_id="b1", round_id="r1", win=eur(0), idempotency_key="s-2")
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BET_ALREADY_SETTLED",
    )
    wrong_round = await wallet.fails(
        "CancelBet", pb.CancelBetReq(bet_id="b1", round_id="r2", idempotency_key="x-1")
    )
    assert (wrong_round.code, wrong_round.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ROUND_MISMATCH",
    )


# -- the client in the docs -------------------------------------------------------------


async def test_the_python_client_in_the_docs_plays_a_round(
    container: Container, server: GrpcServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/grpc.md's client, on code generated the way the page says, with grpc's own
    stubs (``wallet_pb2_grpc``)."""
    found = DOC_CLIENT.search(DOC.read_text())
    assert found is not None, "docs/grpc.md lost its tested client"
    out = tmp_path / "client"
    out.mkdir()
    args = [f"-I{ROOT / 'protos'}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main(["protoc", *args, str(PROTO)]) == 0
    monkeypatch.syspath_prepend(str(out))
    try:
        namespace: dict[str, Any] = {}
        exec(compile(found["code"], str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
        play = namespace["play_round"]
        rich = await funded_session(container)
        assert await play(server.address, ADMIN_KEY, rich, "r-1001", "bet-1") == 1300
        # Played again (a retry): the same answers, and no money moved twice.
        assert await play(server.address, ADMIN_KEY, rich, "r-1001", "bet-1") == 1300
        poor = await funded_session(container, "p2", minor=150)
        assert await play(server.address, ADMIN_KEY, poor, "r-1002", "bet-2") == 150
        assert await balances(container) == (1300, 0)
        page = await container.wallet.transactions("default", "p1", limit=1, cursor=None)
        assert page.data[0].trace_id == "round-r-1001"
    finally:
        for name in [m for m in sys.modules if m == "wallet" or m.startswith("wallet.")]:
            del sys.modules[name]


# -- served with the REST app -----------------------------------------------------------


async def test_the_apps_lifespan_serves_grpc_and_stops_it_before_the_store_closes(
    settings: Settings, clock: ManualClock
) -> None:
    c = await build(settings.model_copy(update={"grpc_port": 0}), clock=clock, auto_migrate=True)
    told: list[str] = []
    app = create_app(c, serve_grpc=True, on_grpc_listening=told.append)
    async with app.router.lifespan_context(app):
        assert len(told) == 1 and re.match(r"^127\.0\.0\.1:\d+$", told[0]), told
        async with grpc.aio.insecure_channel(told[0]) as channel:
            failure = await Wallet(channel).fails("GetBalance", pb.GetBalanceReq(player_id="p1"))
            assert failure.reason == "PLAYER_NOT_FOUND"
    # Stopped: nothing listens there any more.
    async with grpc.aio.insecure_channel(told[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await Wallet(channel).call(
                "GetBalance", pb.GetBalanceReq(player_id="p1"), pb.GetBalanceRes, deadline_s=2
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_apps_lifespan_without_grpc_serves_none(
    settings: Settings, clock: ManualClock
) -> None:
    c = await build(settings, clock=clock, auto_migrate=True)
    told: list[str] = []
    app = create_app(c, on_grpc_listening=told.append)
    async with app.router.lifespan_context(app):
        assert told == []


async def test_a_second_server_on_a_taken_port_fails_to_start(
    container: Container, server: GrpcServer
) -> None:
    """Two croupiers never share a port by accident (gRPC would allow it by default)."""
    second = GrpcServer(container, "127.0.0.1", server.port)
    with pytest.raises(OSError, match=re.escape("cannot listen on 127.0.0.1")):
        await second.start()
    await second.stop()
