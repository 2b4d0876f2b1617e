"""The wallet's repository on SQLAlchemy Core. Every query names its tenant.

A money movement locks its player's row first (``FOR UPDATE`` on PostgreSQL; SQLite has one
writer at a time), so two movements of one player never interleave, and no movement ever
waits for two players: there is no lock order to get wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import (
    Row,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection

from croupier.domain.ledger import Posting
from croupier.domain.money import Currency
from croupier.domain.wallet import Bet, Credit, GameSession, PlayerAccount, WalletTransaction
from croupier.services.ports import IdempotencyRecord, LedgerReport
from croupier.store import tables as t
from croupier.store.prepared import Statement


class SqlWalletRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._postgres = conn.dialect.name == "postgresql"

    # -- idempotency --------------------------------------------------------------------

    def claim_key(self, tenant_id: str, key: str) -> tuple[bool, IdempotencyRecord | None]:
        """Hold the idempotency key until this transaction ends, and read its first answer,
        in one round trip: (locked, first answer). On PostgreSQL the hold is a
        transaction-scoped advisory lock on a 64-bit digest of the key; on SQLite the one
        writer already runs transactions one at a time.

        The record is read in the same statement as the lock is taken, so a writer that
        committed the key just before the lock may be missed; its record's primary key then
        refuses the second insert, and the caller's retry reads it.
        """
        if not self._postgres:
            return True, self.record(tenant_id, key)
        row = _CLAIM_KEY.execute(
            self.conn, lock=_lock_id(tenant_id, key), tenant_id=tenant_id, key=key
        ).one()
        record = None
        if row.fingerprint is not None:
            record = IdempotencyRecord(row.fingerprint, orjson.loads(row.outcome))
        return bool(row.locked), record

    def record(self, tenant_id: str, key: str) -> IdempotencyRecord | None:
        row = _RECORD.execute(self.conn, tenant_id=tenant_id, key=key).first()
        if row is None:
            return None
        return IdempotencyRecord(row.fingerprint, orjson.loads(row.outcome))

    def save_record(
        self,
        tenant_id: str,
        key: str,
        fingerprint: str,
        outcome: dict[str, Any],
        *,
        now_ms: int,
        expires_at_ms: int,
    ) -> None:
        _SAVE_RECORD.execute(
            self.conn,
            tenant_id=tenant_id,
            key=key,
            fingerprint=fingerprint,
            outcome=orjson.dumps(outcome).decode(),
            created_at=now_ms,
            expires_at=expires_at_ms,
        )

    def purge_records(self, now_ms: int, limit: int) -> int:
        """Forget up to ``limit`` idempotency records that expired; how many."""
        r = t.idempotency_records
        expired = self.conn.execute(
            select(r.c.tenant_id, r.c.key).where(r.c.expires_at < now_ms).limit(limit)
        ).all()
        if expired:
            self.conn.execute(
                delete(r).where(tuple_(r.c.tenant_id, r.c.key).in_([tuple(e) for e in expired]))
            )
        return len(expired)

    # -- currencies ---------------------------------------------------------------------

    def currency(self, tenant_id: str, code: str) -> Currency | None:
        row = self.conn.execute(
            select(t.currencies.c.exponent).where(
                t.currencies.c.tenant_id == tenant_id, t.currencies.c.code == code
            )
        ).first()
        return None if row is None else Currency(code, int(row.exponent))

    def currencies(self, tenant_id: str) -> list[Currency]:
        rows = self.conn.execute(
            select(t.currencies.c.code, t.currencies.c.exponent)
            .where(t.currencies.c.tenant_id == tenant_id)
            .order_by(t.currencies.c.code)
        )
        return [Currency(r.code, int(r.exponent)) for r in rows]

    def add_currency(self, tenant_id: str, currency: Currency, now_ms: int) -> None:
        self.conn.execute(
            insert(t.currencies).values(
                tenant_id=tenant_id,
                code=currency.code,
                exponent=currency.exponent,
                created_at=now_ms,
            )
        )

    # -- players ------------------------------------------------------------------------

    def player(
        self,
        tenant_id: str,
        player_id: str,
        *,
        exponent_of: Callable[[str], int],
        lock: bool = False,
    ) -> PlayerAccount | None:
        """The player's account; ``lock`` holds its row until the transaction ends.
        ``exponent_of(currency)`` gives the exponent of the account's currency."""
        query = _PLAYER_FOR_UPDATE if lock and self._postgres else _PLAYER
        row = query.execute(self.conn, tenant_id=tenant_id, id=player_id).first()
        return None if row is None else _player(row, exponent_of(row.currency))

    def add_player(self, account: PlayerAccount) -> None:
        self.conn.execute(
            insert(t.players).values(
                tenant_id=account.tenant_id,
                id=account.player_id,
                currency=account.currency,
                available=account.available,
                held=account.held,
                created_at=account.created_at_ms,
                updated_at=account.created_at_ms,
            )
        )

    def set_balances(
        self, tenant_id: str, player_id: str, available: int, held: int, now_ms: int
    ) -> None:
        _SET_BALANCES.execute(
            self.conn,
            tenant_id=tenant_id,
            id=player_id,
            available=available,
            held=held,
            updated_at=now_ms,
        )

    # -- sessions -----------------------------------------------------------------------

    def session(self, tenant_id: str, session_id: str) -> GameSession | None:
        row = _SESSION.execute(self.conn, tenant_id=tenant_id, id=session_id).first()
        if row is None:
            return None
        return GameSession(row.id, row.tenant_id, row.player_id, row.created_at, row.expires_at)

    def add_session(self, session: GameSession) -> None:
        self.conn.execute(
            insert(t.wallet_sessions).values(
                id=session.id,
                tenant_id=session.tenant_id,
                player_id=session.player_id,
                created_at=session.created_at_ms,
                expires_at=session.expires_at_ms,
            )
        )

    # -- bets and credits ---------------------------------------------------------------

    def bet(self, tenant_id: str, bet_id: str, *, lock: bool = False) -> Bet | None:
        """The bet; ``lock`` holds its row until the transaction ends (PostgreSQL)."""
        query = _BET_FOR_UPDATE if lock and self._postgres else _BET
        row = query.execute(self.conn, tenant_id=tenant_id, id=bet_id).first()
        return None if row is None else _bet(row)

    def add_bet(self, bet: Bet) -> None:
        _ADD_BET.execute(self.conn, **_bet_values(bet))

    def resolve_bet(self, bet: Bet, status: str, win: int | None, now_ms: int) -> bool:
        """Move an authorized bet to ``status``; False if it was not authorized any more.
        The condition makes a hold resolvable once, whatever the caller checked before."""
        done = _RESOLVE_BET.execute(
            self.conn,
            tenant_id=bet.tenant_id,
            id=bet.id,
            status=status,
            win=win,
            updated_at=now_ms,
        )
        return bool(done.rowcount == 1)

    def credit(self, tenant_id: str, credit_id: str) -> Credit | None:
        row = _CREDIT.execute(self.conn, tenant_id=tenant_id, id=credit_id).first()
        if row is None:
            return None
        return Credit(
            tenant_id=row.tenant_id,
            id=row.id,
            player_id=row.player_id,
            amount=row.amount,
            currency=row.currency,
            reason=row.reason,
            campaign_id=row.campaign_id,
            transaction_id=row.transaction_id,
            created_at_ms=row.created_at,
        )

    def add_credit(self, credit: Credit) -> None:
        _ADD_CREDIT.execute(
            self.conn,
            tenant_id=credit.tenant_id,
            id=credit.id,
            player_id=credit.player_id,
            amount=credit.amount,
            currency=credit.currency,
            reason=credit.reason,
            campaign_id=credit.campaign_id,
            transaction_id=credit.transaction_id,
            created_at=credit.created_at_ms,
        )

    # -- the ledger ---------------------------------------------------------------------

    def add_transaction(self, tx: WalletTransaction) -> int:
        """Insert the transaction and its postings; its ``seq``."""
        seq = _ADD_TRANSACTION.execute(
            self.conn,
            id=tx.id,
            tenant_id=tx.tenant_id,
            player_id=tx.player_id,
            kind=tx.kind,
            reference=tx.reference,
            round_id=tx.round_id,
            amount=tx.amount,
            currency=tx.currency,
            available_after=tx.available_after,
            held_after=tx.held_after,
            reason=tx.reason,
            trace_id=tx.trace_id,
            created_at=tx.created_at_ms,
        ).scalar_one()
        _ADD_POSTING.executemany(
            self.conn,
            [
                {
                    "tenant_id": tx.tenant_id,
                    "transaction_seq": seq,
                    "account": p.account,
                    "player_id": p.owner(tx.player_id),
                    "currency": tx.currency,
                    "amount": p.amount,
                }
                for p in tx.postings
            ],
        )
        return int(seq)

    def transaction_of(self, tenant_id: str, kind: str, reference: str) -> str | None:
        """The id of the ``kind`` transaction of a bet or credit, if there is one."""
        w = t.wallet_transactions
        row = self.conn.execute(
            select(w.c.id).where(
                w.c.tenant_id == tenant_id, w.c.kind == kind, w.c.reference == reference
            )
        ).first()
        return None if row is None else str(row.id)

    def transactions(
        self, tenant_id: str, player_id: str, *, before_seq: int | None, limit: int
    ) -> list[WalletTransaction]:
        """The player's transactions, newest first, with their postings."""
        w = t.wallet_transactions
        q = (
            select(w)
            .where(w.c.tenant_id == tenant_id, w.c.player_id == player_id)
            .order_by(w.c.seq.desc())
            .limit(limit)
        )
        if before_seq is not None:
            q = q.where(w.c.seq < before_seq)
        rows = list(self.conn.execute(q))
        if not rows:
            return []
        lines: dict[int, list[Posting]] = {}
        for p in self.conn.execute(
            select(t.postings.c.transaction_seq, t.postings.c.account, t.postings.c.amount)
            .where(
                t.postings.c.tenant_id == tenant_id,
                t.postings.c.transaction_seq.in_([r.seq for r in rows]),
            )
            .order_by(t.postings.c.seq)
        ):
            lines.setdefault(p.transaction_seq, []).append(Posting(p.account, p.amount))
        return [_transaction(r, tuple(lines.get(r.seq, ()))) for r in rows]

    # -- the check ----------------------------------------------------------------------

    def report(self, *, limit: int) -> LedgerReport:
        """Every invariant of the ledger, over all tenants: the counts, and up to ``limit``
        examples of each kind of violation."""
        p, w, pl, b = t.postings, t.wallet_transactions, t.players, t.bets
        c = self.conn
        if self._postgres:
            # One snapshot for every query below: movements committed meanwhile cannot make
            # a balance disagree with postings read a moment later.
            c.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        counts = {
            "players": c.execute(select(func.count()).select_from(pl)).scalar_one(),
            "transactions": c.execute(select(func.count()).select_from(w)).scalar_one(),
            "postings": c.execute(select(func.count()).select_from(p)).scalar_one(),
            "bets": c.execute(select(func.count()).select_from(b)).scalar_one(),
        }
        violations: dict[str, list[str]] = {}

        def found(kind: str, rows: Sequence[Any], describe: Any) -> None:
            if rows:
                violations[kind] = [describe(r) for r in rows]

        unbalanced = c.execute(
            select(
                p.c.tenant_id, p.c.transaction_seq, p.c.currency, func.sum(p.c.amount).label("s")
            )
            .group_by(p.c.tenant_id, p.c.transaction_seq, p.c.currency)
            .having(func.sum(p.c.amount) != 0)
            .limit(limit)
        ).all()
        found(
            "unbalanced transaction",
            unbalanced,
            lambda r: (
                f"tenant {r.tenant_id} transaction #{r.transaction_seq}: "
                f"{r.currency} postings sum to {r.s}"
            ),
        )
        empty = c.execute(
            select(w.c.tenant_id, w.c.id)
            .where(~select(p.c.seq).where(p.c.transaction_seq == w.c.seq).exists())
            .limit(limit)
        ).all()
        found("transaction without postings", empty, lambda r: f"tenant {r.tenant_id}: {r.id}")
        currency_totals = c.execute(
            select(p.c.tenant_id, p.c.currency, func.sum(p.c.amount).label("s"))
            .group_by(p.c.tenant_id, p.c.currency)
            .having(func.sum(p.c.amount) != 0)
            .limit(limit)
        ).all()
        found(
            "currency not balanced",
            currency_totals,
            lambda r: f"tenant {r.tenant_id}: {r.currency} postings sum to {r.s}",
        )
        negative = c.execute(
            select(pl.c.tenant_id, pl.c.id, pl.c.available, pl.c.held)
            .where((pl.c.available < 0) | (pl.c.held < 0))
            .limit(limit)
        ).all()
        found(
            "negative balance",
            negative,
            lambda r: f"tenant {r.tenant_id} player {r.id}: available {r.available}, held {r.held}",
        )
        sums = (
            select(
                p.c.tenant_id,
                p.c.player_id,
                func.sum(func.coalesce(_when(p.c.account == "available", p.c.amount), 0)).label(
                    "a"
                ),
                func.sum(func.coalesce(_when(p.c.account == "held", p.c.amount), 0)).label("h"),
            )
            .where(p.c.player_id != "")
            .group_by(p.c.tenant_id, p.c.player_id)
            .subquery()
        )
        drift = c.execute(
            select(pl.c.tenant_id, pl.c.id, pl.c.available, pl.c.held, sums.c.a, sums.c.h)
            .select_from(
                pl.outerjoin(
                    sums, and_(sums.c.tenant_id == pl.c.tenant_id, sums.c.player_id == pl.c.id)
                )
            )
            .where(
                (pl.c.available != func.coalesce(sums.c.a, 0))
                | (pl.c.held != func.coalesce(sums.c.h, 0))
            )
            .limit(limit)
        ).all()
        found(
            "balance differs from its postings",
            drift,
            lambda r: (
                f"tenant {r.tenant_id} player {r.id}: stored {r.available}/{r.held}, "
                f"postings {r.a or 0}/{r.h or 0} (available/held)"
            ),
        )
        holds = (
            select(
                b.c.tenant_id,
                b.c.player_id,
                func.sum(b.c.amount).label("open"),
            )
            .where(b.c.status == "authorized")
            .group_by(b.c.tenant_id, b.c.player_id)
            .subquery()
        )
        held = c.execute(
            select(pl.c.tenant_id, pl.c.id, pl.c.held, holds.c.open)
            .select_from(
                pl.outerjoin(
                    holds, and_(holds.c.tenant_id == pl.c.tenant_id, holds.c.player_id == pl.c.id)
                )
            )
            .where(pl.c.held != func.coalesce(holds.c.open, 0))
            .limit(limit)
        ).all()
        found(
            "held differs from open bets",
            held,
            lambda r: f"tenant {r.tenant_id} player {r.id}: held {r.held}, open bets {r.open or 0}",
        )
        per_bet = (
            select(
                w.c.tenant_id,
                w.c.reference,
                func.sum(func.coalesce(_when(w.c.kind == "bet", 1), 0)).label("bets"),
                func.sum(func.coalesce(_when(w.c.kind.in_(("settle", "rollback")), 1), 0)).label(
                    "resolutions"
                ),
            )
            .where(w.c.kind.in_(("bet", "settle", "rollback")))
            .group_by(w.c.tenant_id, w.c.reference)
            .subquery()
        )
        wrong = c.execute(
            select(
                b.c.tenant_id,
                b.c.id,
                b.c.status,
                b.c.hold_id,
                per_bet.c.bets,
                per_bet.c.resolutions,
            )
            .select_from(
                b.outerjoin(
                    per_bet,
                    and_(per_bet.c.tenant_id == b.c.tenant_id, per_bet.c.reference == b.c.id),
                )
            )
            .where(
                # A hold: authorized once; resolved never while open, exactly once after.
                (b.c.hold_id.is_not(None) & (func.coalesce(per_bet.c.bets, 0) != 1))
                | ((b.c.status == "authorized") & (func.coalesce(per_bet.c.resolutions, 0) != 0))
                | (
                    b.c.hold_id.is_not(None)
                    & (b.c.status != "authorized")
                    & (func.coalesce(per_bet.c.resolutions, 0) != 1)
                )
                # A bet cancelled before it was seen: no money ever moved for it.
                | (b.c.hold_id.is_(None) & (func.coalesce(per_bet.c.bets, 0) != 0))
            )
            .limit(limit)
        ).all()
        found(
            "hold resolved other than once",
            wrong,
            lambda r: (
                f"tenant {r.tenant_id} bet {r.id} ({r.status}): "
                f"{r.bets or 0} authorization(s), {r.resolutions or 0} resolution(s)"
            ),
        )
        house = c.execute(
            select(p.c.tenant_id, p.c.account, p.c.currency, func.sum(p.c.amount).label("s"))
            .where(p.c.player_id == "")
            .group_by(p.c.tenant_id, p.c.account, p.c.currency)
            .order_by(p.c.tenant_id, p.c.account, p.c.currency)
        ).all()
        return LedgerReport(
            counts={k: int(v) for k, v in counts.items()},
            tenant_accounts=[(r.tenant_id, r.account, r.currency, int(r.s)) for r in house],
            violations=violations,
        )


def _when(condition: Any, value: Any) -> Any:
    return case((condition, value))


def _player(row: Row[Any], exponent: int) -> PlayerAccount:
    return PlayerAccount(
        tenant_id=row.tenant_id,
        player_id=row.id,
        currency=row.currency,
        exponent=exponent,
        available=int(row.available),
        held=int(row.held),
        created_at_ms=row.created_at,
    )


def _bet(row: Row[Any]) -> Bet:
    return Bet(
        tenant_id=row.tenant_id,
        id=row.id,
        status=row.status,
        player_id=row.player_id,
        round_id=row.round_id,
        session_id=row.session_id,
        hold_id=row.hold_id,
        amount=row.amount,
        currency=row.currency,
        win=row.win,
        created_at_ms=row.created_at,
        updated_at_ms=row.updated_at,
    )


def _bet_values(bet: Bet) -> dict[str, Any]:
    return {
        "tenant_id": bet.tenant_id,
        "id": bet.id,
        "status": bet.status,
        "player_id": bet.player_id,
        "round_id": bet.round_id,
        "session_id": bet.session_id,
        "hold_id": bet.hold_id,
        "amount": bet.amount,
        "currency": bet.currency,
        "win": bet.win,
        "created_at": bet.created_at_ms,
        "updated_at": bet.updated_at_ms,
    }


def _transaction(row: Row[Any], postings: tuple[Posting, ...]) -> WalletTransaction:
    return WalletTransaction(
        id=row.id,
        tenant_id=row.tenant_id,
        player_id=row.player_id,
        kind=row.kind,
        reference=row.reference,
        round_id=row.round_id,
        amount=int(row.amount),
        currency=row.currency,
        available_after=int(row.available_after),
        held_after=int(row.held_after),
        reason=row.reason,
        trace_id=row.trace_id,
        created_at_ms=row.created_at,
        postings=postings,
        seq=int(row.seq),
    )


def _lock_id(tenant_id: str, key: str) -> int:
    digest = hashlib.sha256(f"{tenant_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _by_key(table: Any) -> Any:
    return (table.c.tenant_id == bindparam("tenant_id")) & (table.c.id == bindparam("id"))


# The hot statements of a money movement, each compiled once per dialect.
_r = t.idempotency_records
_CLAIM_KEY = Statement(
    select(
        func.pg_try_advisory_xact_lock(bindparam("lock")).label("locked"),
        select(_r.c.fingerprint)
        .where(_r.c.tenant_id == bindparam("tenant_id"), _r.c.key == bindparam("key"))
        .scalar_subquery()
        .label("fingerprint"),
        select(_r.c.outcome)
        .where(_r.c.tenant_id == bindparam("tenant_id"), _r.c.key == bindparam("key"))
        .scalar_subquery()
        .label("outcome"),
    )
)
_RECORD = Statement(
    select(_r.c.fingerprint, _r.c.outcome).where(
        _r.c.tenant_id == bindparam("tenant_id"), _r.c.key == bindparam("key")
    )
)
_SAVE_RECORD = Statement(
    insert(_r).values(
        {
            name: bindparam(name)
            for name in ("tenant_id", "key", "fingerprint", "outcome", "created_at", "expires_at")
        }
    )
)
_PLAYER = Statement(select(t.players).where(_by_key(t.players)))
_PLAYER_FOR_UPDATE = Statement(select(t.players).where(_by_key(t.players)).with_for_update())
_SET_BALANCES = Statement(
    update(t.players)
    .where(_by_key(t.players))
    .values(
        available=bindparam("available"),
        held=bindparam("held"),
        updated_at=bindparam("updated_at"),
    )
)
_SESSION = Statement(select(t.wallet_sessions).where(_by_key(t.wallet_sessions)))
_BET = Statement(select(t.bets).where(_by_key(t.bets)))
_BET_FOR_UPDATE = Statement(select(t.bets).where(_by_key(t.bets)).with_for_update())
_BET_COLUMNS = (
    "tenant_id",
    "id",
    "status",
    "player_id",
    "round_id",
    "session_id",
    "hold_id",
    "amount",
    "currency",
    "win",
    "created_at",
    "updated_at",
)
_ADD_BET = Statement(insert(t.bets).values({name: bindparam(name) for name in _BET_COLUMNS}))
_RESOLVE_BET = Statement(
    update(t.bets)
    .where(_by_key(t.bets), t.bets.c.status == "authorized")
    .values(status=bindparam("status"), win=bindparam("win"), updated_at=bindparam("updated_at"))
)
_CREDIT = Statement(select(t.credits).where(_by_key(t.credits)))
_ADD_CREDIT = Statement(
    insert(t.credits).values(
        {
            name: bindparam(name)
            for name in (
                "tenant_id",
                "id",
                "player_id",
                "amount",
                "currency",
                "reason",
                "campaign_id",
                "transaction_id",
                "created_at",
            )
        }
    )
)
_TRANSACTION_COLUMNS = (
    "id",
    "tenant_id",
    "player_id",
    "kind",
    "reference",
    "round_id",
    "amount",
    "currency",
    "available_after",
    "held_after",
    "reason",
    "trace_id",
    "created_at",
)
_ADD_TRANSACTION = Statement(
    insert(t.wallet_transactions)
    .values({name: bindparam(name) for name in _TRANSACTION_COLUMNS})
    .returning(t.wallet_transactions.c.seq)
)
_ADD_POSTING = Statement(
    insert(t.postings).values(
        {
            name: bindparam(name)
            for name in (
                "tenant_id",
                "transaction_seq",
                "account",
                "player_id",
                "currency",
                "amount",
            )
        }
    )
)
