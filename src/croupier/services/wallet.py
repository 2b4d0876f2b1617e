"""The seamless wallet: players, game sessions, bets, credits and adjustments.

Every write is one transaction that holds, together: the idempotency record of its key, the
ledger postings and the player's new balances, and the events it publishes (the outbox).
So an answered write is in the ledger with its events, and an unanswered one left nothing.

Idempotency, in order:

1. A key that a request of this process is working on: ``409 IDEMPOTENCY_IN_PROGRESS``
   (retryable). On PostgreSQL a transaction-scoped advisory lock on the key extends this
   to every process.
2. A key with a record: the same request gets the stored answer again, whatever happened
   since; another request gets ``422 IDEMPOTENCY_MISMATCH``.
3. Otherwise the work runs, and its answer is stored with it: a success, or a refusal that
   decided something (``INSUFFICIENT_FUNDS``, ``DUPLICATE``, ``BET_CANCELLED`` ...), so the
   same key stays refused. Validation errors and "not found" answers that changed nothing
   are not stored: the key can be used once the request is fixed.

Money movements lock the player's row before they read the balance; a bet's later moves
(settle, cancel) lock its player too, then read the bet again, so nothing can change it in
between.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import orjson

from croupier.catalog import builtin_event_type
from croupier.domain import ledger
from croupier.domain import wallet as w
from croupier.domain.clock import Clock
from croupier.domain.errors import (
    BetAlreadySettled,
    BetCancelled,
    BetNotFound,
    ConcurrentWrite,
    CroupierError,
    CurrencyMismatch,
    DeadlineExceeded,
    Duplicate,
    IdempotencyInProgress,
    IdempotencyKeyRequired,
    IdempotencyMismatch,
    InsufficientFunds,
    InvalidAmount,
    PlayerMismatch,
    PlayerNotFound,
    RoundMismatch,
    SessionInvalid,
    UnknownCurrency,
    ValidationFailed,
)
from croupier.domain.events import Event
from croupier.domain.ids import new_id
from croupier.domain.money import (
    ISO_4217,
    MAX_EXPONENT,
    MAX_MINOR_UNITS,
    Currency,
    check_currency_code,
    check_minor,
    format_minor,
    parse_amount,
)
from croupier.services.outbox import append_events
from croupier.services.pagination import Page, check_limit, encode_cursor, int_cursor
from croupier.services.ports import LedgerReport, NewEvent, Store, UnitOfWork

R = TypeVar("R")

_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: How long a game session lasts when the launch does not say, and at most.
DEFAULT_SESSION_TTL_S = 3600
MAX_SESSION_TTL_S = 7 * 86400


@dataclass(frozen=True)
class MoneyIn:
    """An amount as a request gave it: major units (a decimal string, or a JSON number read
    as a ``Decimal``) or integer minor units, and a currency code."""

    currency: Any
    amount: Any = None
    minor_units: Any = None


@dataclass(frozen=True)
class AuthorizeRequest:
    session_id: str
    bet_id: str
    round_id: str
    amount: MoneyIn
    player_id: str | None = None


@dataclass(frozen=True)
class ProvablyFair:
    server_seed_hash: str
    client_seed: str
    nonce: int


@dataclass(frozen=True)
class SettleRequest:
    bet_id: str
    round_id: str
    win: MoneyIn
    #: With ``provably_fair``, what ``round.completed`` needs; without both, it is not sent.
    game_id: str | None = None
    provably_fair: ProvablyFair | None = None


@dataclass(frozen=True)
class CancelRequest:
    bet_id: str
    round_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class CreditRequest:
    credit_id: str
    player_id: str
    amount: MoneyIn
    reason: str
    campaign_id: str | None = None


@dataclass(frozen=True)
class AdjustmentRequest:
    player_id: str
    amount: MoneyIn
    reason: str


@dataclass(frozen=True)
class SessionAnswer:
    session_id: str
    player_id: str
    expires_at_ms: int

    def to_record(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_record(cls, raw: dict[str, Any]) -> SessionAnswer:
        return cls(**raw)


@dataclass(frozen=True)
class TransactionPage(Page[w.WalletTransaction]):
    exponent: int


#: What a unit of work of a write decides: the answer to store (a record of a result, or a
#: refusal), and whether it wrote events.
_Decision = tuple[dict[str, Any] | CroupierError, bool]


class WalletService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        on_events: Callable[[], None] = lambda: None,
        idempotency_ttl_ms: int = 7 * 86_400_000,
        session_ttl_s: int = DEFAULT_SESSION_TTL_S,
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_events = on_events
        self.idempotency_ttl_ms = idempotency_ttl_ms
        self.session_ttl_s = session_ttl_s
        self._running: set[tuple[str, str]] = set()
        # A registered currency never changes, so what was read once stays true.
        self._registered: dict[tuple[str, str], int] = {}

    # -- currencies ---------------------------------------------------------------------

    async def register_currency(
        self,
        tenant_id: str,
        code: str,
        exponent: int,
        *,
        key: str | None,
        deadline: float | None = None,
    ) -> Currency:
        """Let the tenant's players hold ``code``, with ``exponent`` decimals."""
        check_currency_code(code, field="code")
        if isinstance(exponent, bool) or not isinstance(exponent, int):
            raise ValidationFailed("exponent must be an integer", field="exponent")
        if not 0 <= exponent <= MAX_EXPONENT:
            raise ValidationFailed(f"exponent must be in 0..{MAX_EXPONENT}", field="exponent")
        if code in ISO_4217:
            raise ValidationFailed(
                f"{code} is an ISO 4217 currency ({ISO_4217[code]} decimals); croupier "
                "knows it already",
                field="code",
            )

        def work(uow: UnitOfWork, now: int) -> _Decision:
            if uow.wallet.currency(tenant_id, code) is not None:
                return Duplicate(f"currency {code} is registered already"), False
            uow.wallet.add_currency(tenant_id, Currency(code, exponent), now)
            return {"code": code, "exponent": exponent}, False

        raw = await self._once(
            tenant_id, key, _fingerprint("currency", code, exponent), work, deadline
        )
        return Currency(raw["code"], raw["exponent"])

    async def currencies(self, tenant_id: str) -> list[Currency]:
        """The currencies the tenant registered (the ISO 4217 ones are always known)."""
        return await self.store.run(lambda uow: uow.wallet.currencies(tenant_id), write=False)

    # -- players and sessions -----------------------------------------------------------

    async def create_player(
        self,
        tenant_id: str,
        player_id: str,
        currency: Any,
        *,
        key: str | None,
        deadline: float | None = None,
    ) -> w.WalletAnswer:
        _ident(player_id, "player_id")
        cur = await self._currency(tenant_id, currency, "currency")

        def work(uow: UnitOfWork, now: int) -> _Decision:
            if uow.wallet.player(tenant_id, player_id, exponent_of=_any_exponent) is not None:
                return Duplicate(f"player {player_id!r} exists already"), False
            account = w.PlayerAccount(tenant_id, player_id, cur.code, cur.exponent, 0, 0, now)
            uow.wallet.add_player(account)
            return _answer("created", account).to_record(), False

        fp = _fingerprint("player", player_id, cur.code)
        return w.WalletAnswer.from_record(await self._once(tenant_id, key, fp, work, deadline))

    async def balance(self, tenant_id: str, player_id: str) -> w.PlayerAccount:
        def work(uow: UnitOfWork) -> w.PlayerAccount:
            account = uow.wallet.player(
                tenant_id, player_id, exponent_of=self._exponent_in(uow, tenant_id)
            )
            if account is None:
                raise PlayerNotFound(f"no player {player_id!r}")
            return account

        return await self.store.run(work, write=False)

    async def transactions(
        self, tenant_id: str, player_id: str, *, limit: int, cursor: str | None
    ) -> TransactionPage:
        """The player's ledger, newest first, each transaction with its postings."""
        check_limit(limit)
        before = int_cursor(cursor)

        def work(uow: UnitOfWork) -> tuple[w.PlayerAccount | None, list[w.WalletTransaction]]:
            account = uow.wallet.player(
                tenant_id, player_id, exponent_of=self._exponent_in(uow, tenant_id)
            )
            if account is None:
                return None, []
            rows = uow.wallet.transactions(tenant_id, player_id, before_seq=before, limit=limit + 1)
            return account, rows

        account, rows = await self.store.run(work, write=False)
        if account is None:
            raise PlayerNotFound(f"no player {player_id!r}")
        more = len(rows) > limit
        rows = rows[:limit]
        return TransactionPage(
            rows, encode_cursor(rows[-1].seq) if more else None, exponent=account.exponent
        )

    async def open_session(
        self,
        tenant_id: str,
        player_id: str,
        ttl_seconds: int | None,
        *,
        key: str | None,
        deadline: float | None = None,
    ) -> SessionAnswer:
        """A game launch: the session id the game server then bets with."""
        _ident(player_id, "player_id")
        ttl = self.session_ttl_s if ttl_seconds is None else ttl_seconds
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_SESSION_TTL_S:
            raise ValidationFailed(
                f"ttl_seconds must be an integer in 1..{MAX_SESSION_TTL_S}", field="ttl_seconds"
            )

        def work(uow: UnitOfWork, now: int) -> _Decision:
            if uow.wallet.player(tenant_id, player_id, exponent_of=_any_exponent) is None:
                raise PlayerNotFound(f"no player {player_id!r}")
            session = w.GameSession(
                new_id("ses", now_ms=now), tenant_id, player_id, now, now + ttl * 1000
            )
            uow.wallet.add_session(session)
            return SessionAnswer(session.id, player_id, session.expires_at_ms).to_record(), False

        fp = _fingerprint("session", player_id, ttl_seconds)
        return SessionAnswer.from_record(await self._once(tenant_id, key, fp, work, deadline))

    # -- bets ---------------------------------------------------------------------------

    async def authorize(
        self,
        tenant_id: str,
        req: AuthorizeRequest,
        *,
        key: str | None,
        trace_id: str | None,
        deadline: float | None = None,
    ) -> w.WalletAnswer:
        """Move the stake from available to held, once per bet id."""
        _ident(req.session_id, "session_id")
        _ident(req.bet_id, "bet_id")
        _ident(req.round_id, "round_id")
        if req.player_id is not None:
            _ident(req.player_id, "player_id")
        cur, stake = await self._money(tenant_id, req.amount, "amount")
        if stake <= 0:
            raise InvalidAmount("a bet must be more than zero", field="amount")

        def work(uow: UnitOfWork, now: int) -> _Decision:
            wallet = uow.wallet
            session = wallet.session(tenant_id, req.session_id)
            if session is None or session.expires_at_ms <= now:
                # What the bet id says comes first: a late authorize of a cancelled bet is
                # BET_CANCELLED, whatever became of its session.
                known = wallet.bet(tenant_id, req.bet_id)
                if known is not None:
                    return _already(known), False
                return SessionInvalid("the game session is unknown or has expired"), False
            # Read under the player's lock: a concurrent authorize of this bet id by the
            # same player has committed by now, or waits behind us (and another player's
            # meets the bet's primary key).
            account = self._lock_player(uow, tenant_id, session.player_id)
            bet = wallet.bet(tenant_id, req.bet_id)
            if bet is not None:
                return _already(bet), False
            if req.player_id is not None and req.player_id != session.player_id:
                return PlayerMismatch(
                    "player_id is not the player of this session", field="player_id"
                ), False
            if account.currency != cur.code:
                return _currency_mismatch(account, cur.code, "amount"), False
            if account.available < stake:
                return _insufficient(account, stake), False
            tx = _transaction(
                account,
                "bet",
                req.bet_id,
                stake,
                ledger.authorize(stake),
                round_id=req.round_id,
                trace_id=trace_id,
                now=now,
            )
            hold_id = new_id("hld", now_ms=now)
            wallet.add_bet(
                w.Bet(
                    tenant_id=tenant_id,
                    id=req.bet_id,
                    status="authorized",
                    player_id=account.player_id,
                    round_id=req.round_id,
                    session_id=req.session_id,
                    hold_id=hold_id,
                    amount=stake,
                    currency=cur.code,
                    win=None,
                    created_at_ms=now,
                    updated_at_ms=now,
                )
            )
            self._book(uow, account, tx, [w.bet_placed(tx, account, req.bet_id)], now)
            answer = _answer("authorized", account, tx, hold_id=hold_id, bet_id=req.bet_id)
            return answer.to_record(), True

        fp = _fingerprint(
            "authorize", req.session_id, req.bet_id, req.round_id, stake, cur.code, req.player_id
        )
        return w.WalletAnswer.from_record(await self._once(tenant_id, key, fp, work, deadline))

    async def settle(
        self,
        tenant_id: str,
        req: SettleRequest,
        *,
        key: str | None,
        trace_id: str | None,
        deadline: float | None = None,
    ) -> w.WalletAnswer:
        """Post the hold to the house and credit the win (zero for a loss), atomically."""
        _ident(req.bet_id, "bet_id")
        _ident(req.round_id, "round_id")
        cur, win = await self._money(tenant_id, req.win, "win")
        if win < 0:
            raise InvalidAmount("a win cannot be negative", field="win")
        details = _round_details(req)

        def work(uow: UnitOfWork, now: int) -> _Decision:
            found = self._lock_bet(uow, tenant_id, req.bet_id)
            if found is None:
                raise BetNotFound(f"no bet {req.bet_id!r}")
            bet, account = found
            if bet.status != "authorized" or account is None:
                return _already(bet), False
            assert bet.amount is not None
            if bet.round_id != req.round_id:
                return RoundMismatch(
                    f"bet {bet.id!r} belongs to round {bet.round_id!r}", field="round_id"
                ), False
            if bet.currency != cur.code:
                return _currency_mismatch(account, cur.code, "win"), False
            if account.available + win > MAX_MINOR_UNITS:
                return InvalidAmount(
                    "the win would take the balance past the largest amount croupier holds",
                    field="win",
                ), False
            tx = _transaction(
                account,
                "settle",
                bet.id,
                win,
                ledger.settle(bet.amount, win),
                round_id=bet.round_id,
                trace_id=trace_id,
                now=now,
            )
            if not uow.wallet.resolve_bet(bet, "settled", win, now):
                raise ConcurrentWrite("the bet changed meanwhile; retry")
            self._book(uow, account, tx, w.settled(tx, account, bet, bet.amount, details), now)
            return _answer(
                "settled", account, tx, hold_id=bet.hold_id, bet_id=bet.id
            ).to_record(), True

        fp = _fingerprint(
            "settle",
            req.bet_id,
            req.round_id,
            win,
            cur.code,
            None if details is None else list(details.__dict__.values()),
        )
        return w.WalletAnswer.from_record(await self._once(tenant_id, key, fp, work, deadline))

    async def cancel(
        self,
        tenant_id: str,
        req: CancelRequest,
        *,
        key: str | None,
        trace_id: str | None,
        deadline: float | None = None,
    ) -> w.WalletAnswer:
        """Void the hold. A bet croupier has not seen is remembered as cancelled, so that
        its authorize, should it arrive late, is refused: the rollback overtook it."""
        _ident(req.bet_id, "bet_id")
        if req.round_id is not None:
            _ident(req.round_id, "round_id")
        reason = "cancelled" if req.reason is None else _reason(req.reason)

        def work(uow: UnitOfWork, now: int) -> _Decision:
            wallet = uow.wallet
            found = self._lock_bet(uow, tenant_id, req.bet_id)
            if found is None:
                wallet.add_bet(_tombstone(tenant_id, req.bet_id, req.round_id, now))
                return _never_seen(req.bet_id), False
            bet, account = found
            if account is None:
                return _never_seen(req.bet_id), False
            if req.round_id is not None and bet.round_id != req.round_id:
                return RoundMismatch(
                    f"bet {bet.id!r} belongs to round {bet.round_id!r}", field="round_id"
                ), False
            if bet.status == "settled":
                return _already(bet), False
            if bet.status == "cancelled":
                # Cancelling twice changes nothing more: the answer is the same.
                return _answer(
                    "cancelled", account, hold_id=bet.hold_id, bet_id=bet.id
                ).to_record(), False
            assert bet.amount is not None
            tx = _transaction(
                account,
                "rollback",
                bet.id,
                bet.amount,
                ledger.cancel(bet.amount),
                round_id=bet.round_id,
                reason=reason,
                trace_id=trace_id,
                now=now,
            )
            if not wallet.resolve_bet(bet, "cancelled", None, now):
                raise ConcurrentWrite("the bet changed meanwhile; retry")
            placed = wallet.transaction_of(tenant_id, "bet", bet.id) or ""
            self._book(uow, account, tx, [w.rolled_back(tx, account, placed)], now)
            return _answer(
                "cancelled", account, tx, hold_id=bet.hold_id, bet_id=bet.id
            ).to_record(), True

        fp = _fingerprint("cancel", req.bet_id, req.round_id, req.reason)
        return w.WalletAnswer.from_record(await self._once(tenant_id, key, fp, work, deadline))

    # -- credits and adjustments --------------------------------------------------------

    async def credit(
        self,
        tenant_id: str,
        req: CreditRequest,
        *,
        key: str | None,
        trace_id: str | None,
        deadline: float | None = None,
    ) -> w.WalletAnswer:
        """A credit without a bet, paid by the house: a prize payout, a bonus, a refund."""
        _ident(req.credit_id, "credit_id")
        _ident(req.player_id, "player_id")
        reason = _reason(req.reason)
        if req.campaign_id is not None:
            _ident(req.campaign_id, "campaign_id")
        cur, amount = await self._money(tenant_id, req.amount, "amount")
        if amount <= 0:
            raise InvalidAmount("a credit must be more than zero", field="amount")

        def work(uow: UnitOfWork, now: int) -> _Decision:
            if uow.wallet.credit(tenant_id, req.credit_id) is not None:
                return Duplicate(f"credit {req.credit_id!r} was paid already"), False
            account = self._lock_player(uow, tenant_id, req.player_id)
            if account.currency != cur.code:
                return _currency_mismatch(account, cur.code, "amount"), False
            if account.available + amount > MAX_MINOR_UNITS:
                return InvalidAmount(
                    "the credit would take the balance past the largest amount croupier holds",
                    field="amount",
                ), False
            tx = _transaction(
                account,
                "credit",
                req.credit_id,
                amount,
                ledger.credit(amount),
                reason=reason,
                trace_id=trace_id,
                now=now,
            )
            credit = w.Credit(
                tenant_id=tenant_id,
                id=req.credit_id,
                player_id=req.player_id,
                amount=amount,
                currency=cur.code,
                reason=reason,
                campaign_id=req.campaign_id,
                transaction_id=tx.id,
                created_at_ms=now,
            )
            uow.wallet.add_credit(credit)
            self._book(uow, account, tx, w.credited(tx, account, credit), now)
            return _answer("credited", account, tx, credit_id=req.credit_id).to_record(), True

        fp = _fingerprint(
            "credit", req.credit_id, req.player_id, amount, cur.code, reason, req.campaign_id
        )
        return w.WalletAnswer.from_record(await self._once(tenant_id, key, fp, work, deadline))

    async def adjust(
        self,
        tenant_id: str,
        req: AdjustmentRequest,
        *,
        key: str | None,
        trace_id: str | None,
        deadline: float | None = None,
    ) -> w.WalletAnswer:
        """An operator's deposit (positive) or correction (either sign), with its reason."""
        _ident(req.player_id, "player_id")
        if not isinstance(req.reason, str) or not 1 <= len(req.reason.strip()) <= 200:
            raise ValidationFailed("reason must be 1-200 characters", field="reason")
        cur, amount = await self._money(tenant_id, req.amount, "amount")
        if amount == 0:
            raise InvalidAmount("an adjustment cannot be zero", field="amount")

        def work(uow: UnitOfWork, now: int) -> _Decision:
            account = self._lock_player(uow, tenant_id, req.player_id)
            if account.currency != cur.code:
                return _currency_mismatch(account, cur.code, "amount"), False
            if account.available + amount < 0:
                return _insufficient(account, -amount), False
            if account.available + amount > MAX_MINOR_UNITS:
                return InvalidAmount(
                    "the adjustment would take the balance past the largest amount croupier holds",
                    field="amount",
                ), False
            tx = _transaction(
                account,
                "adjustment",
                new_id("adj", now_ms=now),
                amount,
                ledger.adjust(amount),
                reason=req.reason.strip(),
                trace_id=trace_id,
                now=now,
            )
            self._book(uow, account, tx, [], now)
            return _answer("adjusted", account, tx).to_record(), False

        fp = _fingerprint("adjust", req.player_id, amount, cur.code, req.reason.strip())
        return w.WalletAnswer.from_record(await self._once(tenant_id, key, fp, work, deadline))

    # -- upkeep -------------------------------------------------------------------------

    async def check(self, *, limit: int = 20) -> LedgerReport:
        """Every invariant of the ledger over all tenants, on one snapshot of the store
        (``croupier wallet check``): up to ``limit`` examples of each violation."""
        return await self.store.run(lambda uow: uow.wallet.report(limit=limit), write=False)

    async def purge_idempotency(self, *, limit: int = 1000) -> int:
        """Forget up to ``limit`` idempotency records past their retention; how many."""
        now = self.clock.now_ms()
        return await self.store.run(lambda uow: uow.wallet.purge_records(now, limit))

    # -- the machinery ------------------------------------------------------------------

    async def _once(
        self,
        tenant_id: str,
        key: str | None,
        fingerprint: str,
        work: Callable[[UnitOfWork, int], _Decision],
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Run ``work`` at most once per idempotency key; the answer, first or stored.

        ``deadline`` (``time.monotonic()`` seconds) is when the caller stops waiting: work
        that has not begun by then never begins. Work that has begun finishes, so that a
        retry with the same key gets its answer rather than a second try at the money.
        """
        if key is None or key == "":
            raise IdempotencyKeyRequired(
                "this write needs an idempotency key (the X-Idempotency-Key header, or "
                "the idempotency-key gRPC metadata)",
                field="X-Idempotency-Key",
            )
        if not _KEY.match(key):
            raise ValidationFailed(
                "the idempotency key must be 1-200 visible ASCII characters",
                field="X-Idempotency-Key",
            )
        slot = (tenant_id, key)
        if slot in self._running:
            raise _in_progress()
        self._running.add(slot)
        try:
            step = functools.partial(self._step, tenant_id, key, fingerprint, work, deadline)
            try:
                outcome, published = await self.store.run(step, urgent=True)
            except ConcurrentWrite:
                # Another process took a unique id (a bet, a credit, a player) between our
                # read and our write: once more, and the read sees it.
                outcome, published = await self.store.run(step, urgent=True)
        finally:
            self._running.discard(slot)
        if published:
            self.on_events()
        if "error" in outcome:
            raise _stored_error(outcome["error"])
        result: dict[str, Any] = outcome["result"]
        return result

    def _step(
        self,
        tenant_id: str,
        key: str,
        fingerprint: str,
        work: Callable[[UnitOfWork, int], _Decision],
        deadline: float | None,
        uow: UnitOfWork,
    ) -> tuple[dict[str, Any], bool]:
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the caller's deadline passed before the work began")
        now = self.clock.now_ms()
        locked, first = uow.wallet.claim_key(tenant_id, key)
        if not locked:
            raise _in_progress()
        if first is not None:
            if first.fingerprint != fingerprint:
                raise IdempotencyMismatch(
                    "this idempotency key was used for a different request; use a new key "
                    "for a new request"
                )
            return first.outcome, False
        decided, published = work(uow, now)
        if isinstance(decided, CroupierError):
            outcome: dict[str, Any] = {
                "error": {
                    "code": decided.code,
                    "message": decided.message,
                    "details": decided.details,
                }
            }
        else:
            outcome = {"result": decided}
        uow.wallet.save_record(
            tenant_id,
            key,
            fingerprint,
            outcome,
            now_ms=now,
            expires_at_ms=now + self.idempotency_ttl_ms,
        )
        return outcome, published

    def _book(
        self,
        uow: UnitOfWork,
        account: w.PlayerAccount,
        tx: w.WalletTransaction,
        events: list[w.WalletEvent],
        now: int,
    ) -> None:
        """Write the transaction, its postings, the player's balances and the events."""
        uow.wallet.add_transaction(tx)
        uow.wallet.set_balances(
            account.tenant_id, account.player_id, tx.available_after, tx.held_after, now
        )
        append_events(
            uow,
            [
                NewEvent(
                    event=_event(account, e, tx, now),
                    fingerprint=hashlib.sha256(e.data_json).hexdigest(),
                    idempotency_key=None,
                    delivery_count=0,
                )
                for e in events
            ],
            now,
        )

    def _lock_player(self, uow: UnitOfWork, tenant_id: str, player_id: str) -> w.PlayerAccount:
        account = uow.wallet.player(
            tenant_id, player_id, exponent_of=self._exponent_in(uow, tenant_id), lock=True
        )
        if account is None:
            raise PlayerNotFound(f"no player {player_id!r}")
        return account

    def _lock_bet(
        self, uow: UnitOfWork, tenant_id: str, bet_id: str
    ) -> tuple[w.Bet, w.PlayerAccount | None] | None:
        """The bet, locked, and its player's account, locked after it (None for the account
        of a bet cancelled before it was ever authorized); None: no such bet.

        Settling and cancelling lock the bet, then its player; the other movements lock
        only a player: no two transactions can wait for each other in a circle.
        """
        bet = uow.wallet.bet(tenant_id, bet_id, lock=True)
        if bet is None:
            return None
        if bet.player_id is None:
            return bet, None
        return bet, self._lock_player(uow, tenant_id, bet.player_id)

    def _exponent_in(self, uow: UnitOfWork, tenant_id: str) -> Callable[[str], int]:
        def exponent(code: str) -> int:
            known = ISO_4217.get(code)
            if known is None:
                known = self._registered.get((tenant_id, code))
            if known is None:
                found = uow.wallet.currency(tenant_id, code)
                if found is None:  # pragma: no cover - an account's currency is registered
                    raise UnknownCurrency(f"currency {code} is not registered")
                known = self._registered[(tenant_id, code)] = found.exponent
            return known

        return exponent

    async def _currency(self, tenant_id: str, code: Any, field: str) -> Currency:
        check_currency_code(code, field=field)
        exponent = ISO_4217.get(code)
        if exponent is None:
            exponent = self._registered.get((tenant_id, code))
        if exponent is None:
            found = await self.store.run(
                lambda uow: uow.wallet.currency(tenant_id, code), write=False
            )
            if found is None:
                raise UnknownCurrency(
                    f"{code} is neither an ISO 4217 currency nor one this tenant registered "
                    "(POST /v1/currencies)",
                    field=field,
                )
            exponent = self._registered[(tenant_id, code)] = found.exponent
        return Currency(code, exponent)

    async def _money(self, tenant_id: str, money: MoneyIn, field: str) -> tuple[Currency, int]:
        cur = await self._currency(tenant_id, money.currency, f"{field}.currency")
        if (money.amount is None) == (money.minor_units is None):
            raise InvalidAmount(
                f'{field} takes either amount (a decimal string such as "2.00") or '
                "minor_units (an integer), and not both",
                field=field,
            )
        if money.minor_units is not None:
            return cur, check_minor(money.minor_units, field=f"{field}.minor_units")
        return cur, parse_amount(money.amount, cur, field=f"{field}.amount")


def money_view(minor_units: int, currency: str, exponent: int) -> dict[str, Any]:
    """Money as every answer shows it: ``{"minor_units", "amount", "currency"}``."""
    return {
        "minor_units": minor_units,
        "amount": format_minor(minor_units, exponent),
        "currency": currency,
    }


def _answer(
    status: str,
    account: w.PlayerAccount,
    tx: w.WalletTransaction | None = None,
    **ids: str | None,
) -> w.WalletAnswer:
    return w.WalletAnswer(
        status=status,
        player_id=account.player_id,
        currency=account.currency,
        exponent=account.exponent,
        available=tx.available_after if tx is not None else account.available,
        held=tx.held_after if tx is not None else account.held,
        transaction_id=tx.id if tx is not None else None,
        **ids,
    )


def _transaction(
    account: w.PlayerAccount,
    kind: ledger.TransactionKind,
    reference: str,
    amount: int,
    postings: list[ledger.Posting],
    *,
    now: int,
    trace_id: str | None,
    round_id: str | None = None,
    reason: str | None = None,
) -> w.WalletTransaction:
    available, held = ledger.effect(postings)
    return w.WalletTransaction(
        id=new_id("wtx", now_ms=now),
        tenant_id=account.tenant_id,
        player_id=account.player_id,
        kind=kind,
        reference=reference,
        round_id=round_id,
        amount=amount,
        currency=account.currency,
        available_after=account.available + available,
        held_after=account.held + held,
        reason=reason,
        trace_id=trace_id,
        created_at_ms=now,
        postings=tuple(postings),
    )


def _event(account: w.PlayerAccount, e: w.WalletEvent, tx: w.WalletTransaction, now: int) -> Event:
    shipped = builtin_event_type(e.type)
    assert shipped is not None, e.type
    return Event(
        id=new_id("evt", now_ms=now),
        tenant_id=account.tenant_id,
        type=e.type,
        schema_version=shipped.schema_version,
        data_json=e.data_json,
        occurred_at_ms=now,
        created_at_ms=now,
        ordering_key=account.player_id,
        trace_id=tx.trace_id,
    )


def _already(bet: w.Bet) -> CroupierError:
    """Why a bet in its present state refuses another authorize or settle."""
    if bet.status == "cancelled":
        return BetCancelled(f"bet {bet.id!r} was cancelled")
    if bet.status == "settled":
        return BetAlreadySettled(f"bet {bet.id!r} is settled already")
    return Duplicate("Bet already authorized")


def _never_seen(bet_id: str) -> CroupierError:
    return BetNotFound(
        f"no bet {bet_id!r}; it is now remembered as cancelled, so a late authorize of it "
        "will be refused"
    )


def _tombstone(tenant_id: str, bet_id: str, round_id: str | None, now: int) -> w.Bet:
    return w.Bet(
        tenant_id=tenant_id,
        id=bet_id,
        status="cancelled",
        player_id=None,
        round_id=round_id,
        session_id=None,
        hold_id=None,
        amount=None,
        currency=None,
        win=None,
        created_at_ms=now,
        updated_at_ms=now,
    )


def _insufficient(account: w.PlayerAccount, needed: int) -> CroupierError:
    balance = money_view(account.available, account.currency, account.exponent)
    return InsufficientFunds(
        f"insufficient funds: {format_minor(needed, account.exponent)} {account.currency} "
        f"needed, {balance['amount']} available",
        details={"balance": balance},
    )


def _currency_mismatch(account: w.PlayerAccount, code: str, field: str) -> CroupierError:
    return CurrencyMismatch(
        f"player {account.player_id!r} plays in {account.currency}, not {code}",
        field=f"{field}.currency",
    )


def _in_progress() -> CroupierError:
    return IdempotencyInProgress(
        "a request with this idempotency key is still being processed; retry shortly"
    )


def _stored_error(raw: dict[str, Any]) -> CroupierError:
    """The refusal stored under a key, raised again as it was first."""
    error = CroupierError(str(raw["message"]), details=raw.get("details") or None)
    error.code = str(raw["code"])
    error.retryable = False
    return error


def _ident(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValidationFailed(
            f"{field} must be 1-200 characters of letters, digits, '_', '.', ':', '@' or '-'",
            field=field,
        )
    return value


def _round_details(req: SettleRequest) -> w.RoundDetails | None:
    if req.game_id is None and req.provably_fair is None:
        return None
    if req.game_id is None or req.provably_fair is None:
        raise ValidationFailed(
            "game_id and provably_fair go together: round.completed needs both",
            field="game_id" if req.game_id is None else "provably_fair",
        )
    _ident(req.game_id, "game_id")
    pf = req.provably_fair
    for name in ("server_seed_hash", "client_seed"):
        value = getattr(pf, name)
        if not isinstance(value, str) or not 1 <= len(value) <= 200:
            raise ValidationFailed(
                f"{name} must be 1-200 characters", field=f"provably_fair.{name}"
            )
    if isinstance(pf.nonce, bool) or not isinstance(pf.nonce, int) or not 0 <= pf.nonce < 2**53:
        raise ValidationFailed("nonce must be a whole number from 0", field="provably_fair.nonce")
    return w.RoundDetails(req.game_id, pf.server_seed_hash, pf.client_seed, pf.nonce)


def _reason(value: Any) -> str:
    if not isinstance(value, str) or not _REASON.match(value):
        raise ValidationFailed(
            "reason must be 1-64 lowercase letters, digits or '_', starting with a letter "
            "(e.g. prize_payout)",
            field="reason",
        )
    return value


def _any_exponent(_: str) -> int:
    """For reads that only ask whether an account exists."""
    return 0


def _fingerprint(operation: str, *fields: Any) -> str:
    """A digest of what a write asked for, in canonical form: the same request spelled
    differently (``"2.00"`` or ``200`` minor units; REST or gRPC) has the same one."""
    canonical = orjson.dumps(
        [operation, *[str(f) if isinstance(f, Decimal) else f for f in fields]]
    )
    return hashlib.sha256(canonical).hexdigest()
