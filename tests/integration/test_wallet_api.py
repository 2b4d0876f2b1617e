"""The wallet over REST: accounts, amounts, idempotency, the bet rules, events, isolation."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from jsonschema import Draft202012Validator, FormatChecker

from croupier.bootstrap import Container
from croupier.catalog import builtin_event_type
from croupier.domain.clock import ManualClock
from tests.integration.conftest import TenantFactory, assert_error, create_endpoint, list_all
from tests.integration.wallet_support import (
    authorize,
    balance,
    eur,
    funded_player,
    key,
    ok,
    write,
)
from tests.support.receiver import Receiver

WALLET_TYPES = [
    "wallet.bet_placed",
    "wallet.win_credited",
    "bet.settled",
    "round.completed",
    "wallet.rollback",
    "wallet.credit.ok",
    "PRIZE_PAYOUT_CREATED",
    "PRIZE_PAYOUT_SUCCEEDED",
]


# -- players, currencies, amounts --------------------------------------------------------


async def test_a_new_player_has_a_zero_balance_in_its_currency(
    client: httpx.AsyncClient,
) -> None:
    body = await ok(client, "/v1/players", {"player_id": "p1", "currency": "EUR"})
    zero = {"minor_units": 0, "amount": "0.00", "currency": "EUR"}
    assert body == {"player_id": "p1", "currency": "EUR", "available": zero, "held": zero}
    r = await client.get("/v1/players/p1/balance")
    assert r.json() == {"player_id": "p1", "available": zero, "held": zero}


async def test_a_player_id_is_taken_once_and_its_creation_replays(
    client: httpx.AsyncClient,
) -> None:
    first = await write(
        client, "/v1/players", {"player_id": "p1", "currency": "EUR"}, idempotency_key="a"
    )
    again = await write(
        client, "/v1/players", {"player_id": "p1", "currency": "EUR"}, idempotency_key="a"
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json() == again.json()
    other = await write(client, "/v1/players", {"player_id": "p1", "currency": "EUR"})
    assert_error(other, 409, "DUPLICATE")


async def test_an_unknown_currency_is_refused_until_the_tenant_registers_it(
    client: httpx.AsyncClient,
) -> None:
    r = await write(client, "/v1/players", {"player_id": "p1", "currency": "USDT"})
    assert_error(r, 422, "UNKNOWN_CURRENCY", "currency")
    body = await ok(client, "/v1/currencies", {"code": "USDT", "exponent": 6})
    assert body == {"code": "USDT", "exponent": 6}
    await ok(client, "/v1/players", {"player_id": "p1", "currency": "USDT"})
    await ok(
        client,
        "/v1/players/p1/adjustments",
        {"amount": {"amount": "1.123456", "currency": "USDT"}, "reason": "deposit"},
    )
    r = await client.get("/v1/players/p1/balance")
    assert r.json()["available"] == {
        "minor_units": 1123456,
        "amount": "1.123456",
        "currency": "USDT",
    }
    listed = await client.get("/v1/currencies")
    assert listed.json() == {"data": [{"code": "USDT", "exponent": 6}]}


async def test_an_iso_currency_cannot_be_registered_again(client: httpx.AsyncClient) -> None:
    r = await write(client, "/v1/currencies", {"code": "EUR", "exponent": 3})
    assert_error(r, 422, "VALIDATION_FAILED", "code")
    r = await write(client, "/v1/currencies", {"code": "usdt", "exponent": 6})
    assert_error(r, 422, "VALIDATION_FAILED", "code")


async def test_amounts_are_exact_in_every_spelling(client: httpx.AsyncClient) -> None:
    player = await funded_player(client, deposit="1000.00")
    # A JSON number is read from its text: 0.1 and 2.00 are exact; 1E+2 is 100.
    held = 0
    for n, (raw, minor) in enumerate([(b"0.1", 10), (b"2.00", 200), (b"1E+2", 10000)]):
        body = (
            b'{"session_id":"%s","bet_id":"n%d","round_id":"r",'
            b'"amount":{"amount":%s,"currency":"EUR"}}' % (player.session_id.encode(), n, raw)
        )
        r = await write(client, "/v1/bets/authorize", body)
        assert r.status_code == 200, r.text
        held += minor
        assert r.json()["held"]["minor_units"] == held
    r = await write(
        client,
        "/v1/bets/authorize",
        {
            "session_id": player.session_id,
            "bet_id": "m",
            "round_id": "r",
            "amount": {"minor_units": 7, "currency": "EUR"},
        },
    )
    assert r.json()["held"] == {"minor_units": 10217, "amount": "102.17", "currency": "EUR"}


async def test_bad_amounts_get_a_clear_422_and_move_nothing(client: httpx.AsyncClient) -> None:
    player = await funded_player(client)
    cases: list[tuple[Any, str, str]] = [
        ({"amount": "2.001", "currency": "EUR"}, "AMOUNT_PRECISION", "amount.amount"),
        ({"amount": "-2.00", "currency": "EUR"}, "INVALID_AMOUNT", "amount"),
        ({"amount": "0", "currency": "EUR"}, "INVALID_AMOUNT", "amount"),
        ({"amount": "2,00", "currency": "EUR"}, "INVALID_AMOUNT", "amount.amount"),
        ({"amount": "2.00", "minor_units": 200, "currency": "EUR"}, "INVALID_AMOUNT", "amount"),
        ({"currency": "EUR"}, "INVALID_AMOUNT", "amount"),
        ({"minor_units": 2**53, "currency": "EUR"}, "INVALID_AMOUNT", "amount.minor_units"),
        ({"minor_units": "200", "currency": "EUR"}, "VALIDATION_FAILED", "amount.minor_units"),
        ({"amount": "2.00", "currency": "USD"}, "CURRENCY_MISMATCH", "amount.currency"),
        ({"amount": "2.00", "currency": "XXX"}, "UNKNOWN_CURRENCY", "amount.currency"),
    ]
    for n, (amount, code, field) in enumerate(cases):
        r = await write(
            client,
            "/v1/bets/authorize",
            {"session_id": player.session_id, "bet_id": f"b{n}", "round_id": "r", "amount": amount},
        )
        assert_error(r, 422, code, field)
    raw = b'{"session_id":"%s","bet_id":"x","round_id":"r","amount":{"amount":2.001,'
    raw += b'"currency":"EUR"}}'
    r = await write(client, "/v1/bets/authorize", raw % player.session_id.encode())
    assert_error(r, 422, "AMOUNT_PRECISION", "amount.amount")
    r = await write(client, "/v1/bets/authorize", b'{"amount":{"amount":NaN,"currency":"EUR"}}')
    assert_error(r, 400, "MALFORMED_JSON")
    assert await balance(client) == (10000, 0)


async def test_the_jpy_and_kwd_exponents_are_known(client: httpx.AsyncClient) -> None:
    await funded_player(client, "yen", deposit="500", currency="JPY")
    await funded_player(client, "dinar", deposit="1.250", currency="KWD")
    assert await balance(client, "yen") == (500, 0)
    assert await balance(client, "dinar") == (1250, 0)
    r = await write(
        client,
        "/v1/players/yen/adjustments",
        {"amount": {"amount": "1.5", "currency": "JPY"}, "reason": "x"},
    )
    assert_error(r, 422, "AMOUNT_PRECISION")


# -- idempotency -------------------------------------------------------------------------


async def test_every_write_needs_an_idempotency_key(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/players", json={"player_id": "p1", "currency": "EUR"})
    assert_error(r, 422, "IDEMPOTENCY_KEY_REQUIRED", "X-Idempotency-Key")
    r = await client.post(
        "/v1/players",
        json={"player_id": "p1", "currency": "EUR"},
        headers={"X-Idempotency-Key": "k" * 201},
    )
    assert_error(r, 422, "VALIDATION_FAILED", "X-Idempotency-Key")


async def test_a_replay_returns_the_first_answer_and_moves_nothing_more(
    client: httpx.AsyncClient,
) -> None:
    player = await funded_player(client)
    first = await authorize(client, player, "b1", idempotency_key="bet-1")
    # The same request, spelled in minor units: the same request.
    again = await write(
        client,
        "/v1/bets/authorize",
        {
            "session_id": player.session_id,
            "bet_id": "b1",
            "round_id": "r1",
            "amount": {"minor_units": 200, "currency": "EUR"},
        },
        idempotency_key="bet-1",
    )
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert await balance(client) == (9800, 200)


async def test_a_key_reused_for_another_request_is_refused(client: httpx.AsyncClient) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1", idempotency_key="bet-1")
    r = await authorize(client, player, "b1", "3.00", idempotency_key="bet-1")
    assert_error(r, 422, "IDEMPOTENCY_MISMATCH")
    r = await write(client, "/v1/bets/cancel", {"bet_id": "b1"}, idempotency_key="bet-1")
    assert_error(r, 422, "IDEMPOTENCY_MISMATCH")
    assert await balance(client) == (9800, 200)


async def test_a_bet_refused_for_funds_stays_refused_under_its_key(
    client: httpx.AsyncClient,
) -> None:
    player = await funded_player(client, deposit="1.00")
    r = await authorize(client, player, "b1", "2.00", idempotency_key="bet-1")
    body = r.json()
    assert r.status_code == 409 and body["code"] == "INSUFFICIENT_FUNDS", r.text
    assert body["balance"] == {"minor_units": 100, "amount": "1.00", "currency": "EUR"}
    assert body["retryable"] is False
    await ok(client, "/v1/players/p1/adjustments", {"amount": eur("10.00"), "reason": "deposit"})
    again = await authorize(client, player, "b1", "2.00", idempotency_key="bet-1")
    assert again.status_code == 409 and again.json()["code"] == "INSUFFICIENT_FUNDS"
    assert again.json()["balance"] == body["balance"]
    fresh = await authorize(client, player, "b1", "2.00")
    assert fresh.status_code == 200, fresh.text
    assert await balance(client) == (900, 200)


async def test_a_not_found_answer_is_not_kept_under_its_key(client: httpx.AsyncClient) -> None:
    player = await funded_player(client)
    settle = {"bet_id": "b1", "round_id": "r1", "win": eur("1.00")}
    r = await write(client, "/v1/bets/settle", settle, idempotency_key="settle-1")
    assert_error(r, 404, "BET_NOT_FOUND")
    await authorize(client, player, "b1")
    r = await write(client, "/v1/bets/settle", settle, idempotency_key="settle-1")
    assert r.status_code == 200, r.text


# -- the bet rules -----------------------------------------------------------------------


async def test_authorize_holds_the_stake(client: httpx.AsyncClient) -> None:
    player = await funded_player(client)
    r = await authorize(client, player, "b_001", round_id="r_8c12")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "authorized"
    assert body["hold_id"].startswith("hld_")
    assert body["balance"] == {"minor_units": 9800, "amount": "98.00", "currency": "EUR"}
    assert body["held"]["minor_units"] == 200
    assert await balance(client) == (9800, 200)


async def test_a_second_authorize_of_one_bet_is_a_duplicate(client: httpx.AsyncClient) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1")
    r = await authorize(client, player, "b1")
    body = assert_error(r, 409, "DUPLICATE")
    assert body["message"] == "Bet already authorized"
    assert body["retryable"] is False
    assert await balance(client) == (9800, 200)


async def test_an_unknown_or_expired_session_is_refused(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    player = await funded_player(client)
    r = await write(
        client,
        "/v1/bets/authorize",
        {"session_id": "ses_nope", "bet_id": "b1", "round_id": "r", "amount": eur("1.00")},
    )
    assert_error(r, 401, "SESSION_INVALID")
    short = await ok(client, "/v1/sessions", {"player_id": "p1", "ttl_seconds": 60})
    clock.advance(61)
    r = await write(
        client,
        "/v1/bets/authorize",
        {"session_id": short["session_id"], "bet_id": "b2", "round_id": "r", "amount": eur("1.00")},
    )
    assert_error(r, 401, "SESSION_INVALID")
    assert player.session_id != short["session_id"]
    assert await balance(client) == (10000, 0)


async def test_settle_and_cancel_are_accepted_after_the_session_ended(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1")
    await authorize(client, player, "b2")
    clock.advance(2 * 3600)
    await ok(client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r1", "win": eur("5.00")})
    await ok(client, "/v1/bets/cancel", {"bet_id": "b2"})
    assert await balance(client) == (10000 - 200 + 500, 0)


async def test_a_player_id_must_match_the_sessions_player(client: httpx.AsyncClient) -> None:
    player = await funded_player(client)
    await funded_player(client, "p2")
    body = {"session_id": player.session_id, "bet_id": "b1", "round_id": "r", "amount": eur("1.00")}
    r = await write(client, "/v1/bets/authorize", {**body, "player_id": "p2"})
    assert_error(r, 422, "PLAYER_MISMATCH", "player_id")
    r = await write(client, "/v1/bets/authorize", {**body, "player_id": "p1"})
    assert r.status_code == 200, r.text


async def test_settle_posts_the_hold_and_credits_the_win_at_once(
    client: httpx.AsyncClient,
) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1", round_id="r_8c12")
    body = await ok(
        client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r_8c12", "win": eur("14.60")}
    )
    assert body["status"] == "settled"
    assert body["balance"] == {"minor_units": 11260, "amount": "112.60", "currency": "EUR"}
    assert await balance(client) == (11260, 0)
    # A loss settles with a win of zero.
    await authorize(client, player, "b2")
    await ok(client, "/v1/bets/settle", {"bet_id": "b2", "round_id": "r1", "win": eur("0")})
    assert await balance(client) == (11060, 0)


async def test_settle_checks_the_round_and_the_currency(client: httpx.AsyncClient) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1", round_id="r1")
    r = await write(client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r2", "win": eur("1")})
    assert_error(r, 422, "ROUND_MISMATCH", "round_id")
    r = await write(
        client,
        "/v1/bets/settle",
        {"bet_id": "b1", "round_id": "r1", "win": {"amount": "1", "currency": "USD"}},
    )
    assert_error(r, 422, "CURRENCY_MISMATCH", "win.currency")
    r = await write(client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r1", "win": eur("-1")})
    assert_error(r, 422, "INVALID_AMOUNT", "win")
    assert await balance(client) == (9800, 200)


async def test_cancel_voids_the_hold_once(client: httpx.AsyncClient) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1")
    body = await ok(client, "/v1/bets/cancel", {"bet_id": "b1"})
    assert body["status"] == "cancelled"
    assert body["balance"]["minor_units"] == 10000
    again = await ok(client, "/v1/bets/cancel", {"bet_id": "b1"})
    assert again["status"] == "cancelled"
    assert await balance(client) == (10000, 0)
    r = await write(client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r1", "win": eur("1")})
    assert_error(r, 409, "BET_CANCELLED")
    r = await authorize(client, player, "b1")
    assert_error(r, 409, "BET_CANCELLED")


async def test_cancel_after_settle_is_refused(client: httpx.AsyncClient) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1")
    await ok(client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r1", "win": eur("3")})
    r = await write(client, "/v1/bets/cancel", {"bet_id": "b1"})
    assert_error(r, 409, "BET_ALREADY_SETTLED")
    r = await write(client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r1", "win": eur("3")})
    assert_error(r, 409, "BET_ALREADY_SETTLED")
    assert await balance(client) == (10100, 0)


async def test_a_rollback_that_overtakes_its_bet_refuses_the_late_authorize(
    client: httpx.AsyncClient,
) -> None:
    player = await funded_player(client)
    r = await write(client, "/v1/bets/cancel", {"bet_id": "late", "round_id": "r1"})
    assert_error(r, 404, "BET_NOT_FOUND")
    r = await authorize(client, player, "late")
    assert_error(r, 409, "BET_CANCELLED")
    r = await write(client, "/v1/bets/cancel", {"bet_id": "late"})
    assert_error(r, 404, "BET_NOT_FOUND")
    assert await balance(client) == (10000, 0)


# -- credits and adjustments -------------------------------------------------------------


async def test_a_prize_payout_is_credited_once(client: httpx.AsyncClient) -> None:
    await funded_player(client, deposit="0")
    credit = {
        "credit_id": "prize-1",
        "player_id": "p1",
        "amount": eur("25.00"),
        "reason": "prize_payout",
        "campaign_id": "summer",
    }
    body = await ok(client, "/v1/credits", credit)
    assert body["status"] == "credited" and body["credit_id"] == "prize-1"
    r = await write(client, "/v1/credits", credit)
    assert_error(r, 409, "DUPLICATE")
    r = await write(client, "/v1/credits", {**credit, "credit_id": "prize-2", "player_id": "ghost"})
    assert_error(r, 404, "PLAYER_NOT_FOUND")
    r = await write(client, "/v1/credits", {**credit, "credit_id": "prize-3", "reason": "Prize!"})
    assert_error(r, 422, "VALIDATION_FAILED", "reason")
    assert await balance(client) == (2500, 0)


async def test_an_adjustment_may_take_money_back_but_not_below_zero(
    client: httpx.AsyncClient,
) -> None:
    await funded_player(client, deposit="10.00")
    path = "/v1/players/p1/adjustments"
    r = await write(client, path, {"amount": eur("-10.01"), "reason": "correction"})
    assert r.status_code == 409 and r.json()["code"] == "INSUFFICIENT_FUNDS", r.text
    await ok(client, path, {"amount": eur("-10.00"), "reason": "correction"})
    r = await write(client, path, {"amount": eur("0"), "reason": "nothing"})
    assert_error(r, 422, "INVALID_AMOUNT", "amount")
    assert await balance(client) == (0, 0)


# -- the ledger and its events -----------------------------------------------------------


async def test_the_transactions_page_newest_first_with_balanced_postings(
    client: httpx.AsyncClient,
) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1")
    await ok(client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r1", "win": eur("5")})
    await authorize(client, player, "b2")
    await ok(client, "/v1/bets/cancel", {"bet_id": "b2", "reason": "round_voided"})
    rows = await list_all(client, "/v1/players/p1/transactions", limit="2")
    assert [r["kind"] for r in rows] == ["rollback", "bet", "settle", "bet", "adjustment"]
    assert rows[0]["reason"] == "round_voided"
    for row in rows:
        assert sum(p["amount"]["minor_units"] for p in row["postings"]) == 0, row
    assert rows[0]["available_after"]["minor_units"] == 10300
    r = await client.get("/v1/players/ghost/transactions")
    assert_error(r, 404, "PLAYER_NOT_FOUND")


async def test_each_movement_publishes_its_events_with_the_money(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    # Ordered: one player's events arrive in the order the money moved (their ordering key
    # is the player id); an unordered endpoint gets them concurrently, in any order.
    await create_endpoint(client, receiver.url(), event_types=WALLET_TYPES, ordered=True)
    player = await funded_player(client)
    r = await client.post(
        "/v1/bets/authorize",
        json={
            "session_id": player.session_id,
            "bet_id": "b1",
            "round_id": "r1",
            "amount": eur("2.00"),
        },
        headers={"X-Idempotency-Key": key(), "X-Trace-Id": "tr_a1b2"},
    )
    assert r.status_code == 200 and r.headers["x-trace-id"] == "tr_a1b2"
    fair = {"server_seed_hash": "9f86d0", "client_seed": "c1f8a3", "nonce": 42}
    await ok(
        client,
        "/v1/bets/settle",
        {
            "bet_id": "b1",
            "round_id": "r1",
            "win": eur("14.60"),
            "game_id": "book-of-dice",
            "provably_fair": fair,
        },
    )
    await authorize(client, player, "b2")
    await ok(client, "/v1/bets/cancel", {"bet_id": "b2"})
    await ok(
        client,
        "/v1/credits",
        {
            "credit_id": "c1",
            "player_id": "p1",
            "amount": eur("5"),
            "reason": "prize_payout",
            "campaign_id": "camp",
        },
    )
    # Refusals publish nothing.
    await authorize(client, player, "b1")
    await container.dispatcher.run_until_idle()
    events = [orjson.loads(req.body) for req in receiver.requests]
    types = [e["type"] for e in events]
    assert types == [
        "wallet.bet_placed",
        "wallet.win_credited",
        "bet.settled",
        "round.completed",
        "wallet.bet_placed",
        "wallet.rollback",
        "wallet.credit.ok",
        "PRIZE_PAYOUT_CREATED",
        "PRIZE_PAYOUT_SUCCEEDED",
    ]
    for e in events:
        schema = builtin_event_type(e["type"])
        assert schema is not None
        Draft202012Validator(schema.schema, format_checker=FormatChecker()).validate(e["data"])
    placed, won, bet_settled, completed, placed2, rollback, credit_ok, created, succeeded = (
        e["data"] for e in events
    )
    assert placed["amount"] == 2.0 and placed["balance"] == 98.0 and placed["roundId"] == "r1"
    assert receiver.requests[0].body.count(b'"amount":2.00') == 1  # exact, as money is
    assert won["amount"] == 14.6 and won["balance"] == 112.6
    assert completed["betAmount"] == 2.0 and completed["winAmount"] == 14.6
    assert completed["rtp"] == 7.3 and completed["gameId"] == "book-of-dice"
    assert completed["provablyFair"] == {
        "serverSeedHash": "9f86d0",
        "clientSeed": "c1f8a3",
        "nonce": 42,
    }
    assert bet_settled["win"] == {"minor_units": 1460, "currency": "EUR"}
    assert rollback["originalTransactionId"] == placed2["transactionId"]
    assert rollback["originalTransactionType"] == "bet"
    assert credit_ok["amount"] == {"minor_units": 500, "currency": "EUR"}
    assert created["request_id"] == succeeded["request_id"]
    assert (created["status"], succeeded["status"]) == ("TODO", "SUCCESS")
    stored = await list_all(client, "/v1/events")
    assert {e["ordering_key"] for e in stored} == {"p1"}
    assert stored[0]["trace_id"] == "tr_a1b2"
    tx = await list_all(client, "/v1/players/p1/transactions")
    assert tx[-2]["trace_id"] == "tr_a1b2"


async def test_a_settle_without_round_details_sends_no_round_completed(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    await create_endpoint(client, receiver.url(), event_types=WALLET_TYPES, ordered=True)
    player = await funded_player(client)
    await authorize(client, player, "b1")
    r = await write(
        client,
        "/v1/bets/settle",
        {"bet_id": "b1", "round_id": "r1", "win": eur("0"), "game_id": "g"},
    )
    assert_error(r, 422, "VALIDATION_FAILED", "provably_fair")
    await ok(client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r1", "win": eur("0")})
    await container.dispatcher.run_until_idle()
    types = [orjson.loads(req.body)["type"] for req in receiver.requests]
    assert types == ["wallet.bet_placed", "wallet.win_credited", "bet.settled"]


async def test_the_rollback_event_names_the_bet_it_reverses(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    await create_endpoint(
        client, receiver.url(), event_types=["wallet.bet_placed", "wallet.rollback"], ordered=True
    )
    player = await funded_player(client)
    await authorize(client, player, "b1")
    await ok(client, "/v1/bets/cancel", {"bet_id": "b1"})
    await container.dispatcher.run_until_idle()
    placed, rollback = (orjson.loads(r.body)["data"] for r in receiver.requests)
    assert rollback["originalTransactionId"] == placed["transactionId"]
    assert rollback["reason"] == "cancelled"


async def test_the_ledger_check_is_clean_after_a_mixed_session(
    client: httpx.AsyncClient, container: Container
) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1")
    await authorize(client, player, "b2")
    await authorize(client, player, "b3")
    await ok(client, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r1", "win": eur("7.50")})
    await ok(client, "/v1/bets/cancel", {"bet_id": "b2"})
    await ok(
        client,
        "/v1/credits",
        {"credit_id": "c", "player_id": "p1", "amount": eur("1"), "reason": "bonus"},
    )
    await write(client, "/v1/bets/cancel", {"bet_id": "never"})
    report = await container.wallet.check()
    assert report.violations == {}
    assert report.counts["players"] == 1
    house = {(a, c): b for _, a, c, b in report.tenant_accounts}
    assert house == {("external", "EUR"): -10000, ("house", "EUR"): 200 - 750 - 100}


# -- isolation ---------------------------------------------------------------------------


async def test_another_tenant_sees_and_moves_nothing_of_ours(
    client: httpx.AsyncClient, new_tenant: TenantFactory
) -> None:
    player = await funded_player(client)
    await authorize(client, player, "b1")
    other = await new_tenant("acme")
    r = await other.http.get("/v1/players/p1/balance")
    assert_error(r, 404, "PLAYER_NOT_FOUND")
    r = await write(
        other.http, "/v1/bets/settle", {"bet_id": "b1", "round_id": "r1", "win": eur("1")}
    )
    assert_error(r, 404, "BET_NOT_FOUND")
    r = await write(
        other.http,
        "/v1/bets/authorize",
        {"session_id": player.session_id, "bet_id": "b9", "round_id": "r", "amount": eur("1")},
    )
    assert_error(r, 401, "SESSION_INVALID")
    # Their own player of the same id is theirs alone.
    await ok(other.http, "/v1/players", {"player_id": "p1", "currency": "EUR"})
    assert await balance(other.http) == (0, 0)
    assert await balance(client) == (9800, 200)


async def test_expired_keys_are_forgotten_and_the_bet_id_still_guards_the_money(
    client: httpx.AsyncClient, container: Container, clock: ManualClock
) -> None:
    player = await funded_player(client)
    first = await authorize(client, player, "b1", idempotency_key="old")
    assert first.status_code == 200
    clock.advance(6 * 86400)
    assert await container.wallet.purge_idempotency() == 0
    clock.advance(2 * 86400)
    # The setup's three keys and this one, all past seven days.
    assert await container.wallet.purge_idempotency() == 4
    again = await authorize(client, player, "b1", idempotency_key="old")
    assert_error(again, 409, "DUPLICATE")
    assert await balance(client) == (9800, 200)
