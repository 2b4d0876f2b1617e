from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Money(_message.Message):
    __slots__ = ("minor_units", "currency", "amount")
    MINOR_UNITS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    minor_units: int
    currency: str
    amount: str
    def __init__(self, minor_units: _Optional[int] = ..., currency: _Optional[str] = ..., amount: _Optional[str] = ...) -> None: ...

class AuthorizeBetReq(_message.Message):
    __slots__ = ("session_id", "bet_id", "round_id", "amount", "idempotency_key", "player_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BET_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    bet_id: str
    round_id: str
    amount: Money
    idempotency_key: str
    player_id: str
    def __init__(self, session_id: _Optional[str] = ..., bet_id: _Optional[str] = ..., round_id: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., player_id: _Optional[str] = ...) -> None: ...

class AuthorizeBetRes(_message.Message):
    __slots__ = ("status", "hold_id", "balance", "held", "bet_id", "player_id", "transaction_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    BET_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    status: str
    hold_id: str
    balance: Money
    held: Money
    bet_id: str
    player_id: str
    transaction_id: str
    def __init__(self, status: _Optional[str] = ..., hold_id: _Optional[str] = ..., balance: _Optional[_Union[Money, _Mapping]] = ..., held: _Optional[_Union[Money, _Mapping]] = ..., bet_id: _Optional[str] = ..., player_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class SettleReq(_message.Message):
    __slots__ = ("bet_id", "round_id", "win", "idempotency_key", "game_id", "provably_fair")
    BET_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    WIN_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    GAME_ID_FIELD_NUMBER: _ClassVar[int]
    PROVABLY_FAIR_FIELD_NUMBER: _ClassVar[int]
    bet_id: str
    round_id: str
    win: Money
    idempotency_key: str
    game_id: str
    provably_fair: ProvablyFair
    def __init__(self, bet_id: _Optional[str] = ..., round_id: _Optional[str] = ..., win: _Optional[_Union[Money, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., game_id: _Optional[str] = ..., provably_fair: _Optional[_Union[ProvablyFair, _Mapping]] = ...) -> None: ...

class ProvablyFair(_message.Message):
    __slots__ = ("server_seed_hash", "client_seed", "nonce")
    SERVER_SEED_HASH_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SEED_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    server_seed_hash: str
    client_seed: str
    nonce: int
    def __init__(self, server_seed_hash: _Optional[str] = ..., client_seed: _Optional[str] = ..., nonce: _Optional[int] = ...) -> None: ...

class SettleRes(_message.Message):
    __slots__ = ("status", "balance", "hold_id", "held", "bet_id", "player_id", "transaction_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    BET_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    status: str
    balance: Money
    hold_id: str
    held: Money
    bet_id: str
    player_id: str
    transaction_id: str
    def __init__(self, status: _Optional[str] = ..., balance: _Optional[_Union[Money, _Mapping]] = ..., hold_id: _Optional[str] = ..., held: _Optional[_Union[Money, _Mapping]] = ..., bet_id: _Optional[str] = ..., player_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class CancelBetReq(_message.Message):
    __slots__ = ("bet_id", "round_id", "reason", "idempotency_key")
    BET_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    bet_id: str
    round_id: str
    reason: str
    idempotency_key: str
    def __init__(self, bet_id: _Optional[str] = ..., round_id: _Optional[str] = ..., reason: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CancelBetRes(_message.Message):
    __slots__ = ("status", "hold_id", "balance", "held", "bet_id", "player_id", "transaction_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    BET_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    status: str
    hold_id: str
    balance: Money
    held: Money
    bet_id: str
    player_id: str
    transaction_id: str
    def __init__(self, status: _Optional[str] = ..., hold_id: _Optional[str] = ..., balance: _Optional[_Union[Money, _Mapping]] = ..., held: _Optional[_Union[Money, _Mapping]] = ..., bet_id: _Optional[str] = ..., player_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class CreditReq(_message.Message):
    __slots__ = ("credit_id", "player_id", "amount", "reason", "campaign_id", "idempotency_key")
    CREDIT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    credit_id: str
    player_id: str
    amount: Money
    reason: str
    campaign_id: str
    idempotency_key: str
    def __init__(self, credit_id: _Optional[str] = ..., player_id: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., reason: _Optional[str] = ..., campaign_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreditRes(_message.Message):
    __slots__ = ("status", "credit_id", "balance", "held", "player_id", "transaction_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    status: str
    credit_id: str
    balance: Money
    held: Money
    player_id: str
    transaction_id: str
    def __init__(self, status: _Optional[str] = ..., credit_id: _Optional[str] = ..., balance: _Optional[_Union[Money, _Mapping]] = ..., held: _Optional[_Union[Money, _Mapping]] = ..., player_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class GetBalanceReq(_message.Message):
    __slots__ = ("player_id",)
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    def __init__(self, player_id: _Optional[str] = ...) -> None: ...

class GetBalanceRes(_message.Message):
    __slots__ = ("player_id", "available", "held")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    available: Money
    held: Money
    def __init__(self, player_id: _Optional[str] = ..., available: _Optional[_Union[Money, _Mapping]] = ..., held: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class CreateSessionReq(_message.Message):
    __slots__ = ("player_id", "ttl_seconds", "idempotency_key")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    ttl_seconds: int
    idempotency_key: str
    def __init__(self, player_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreateSessionRes(_message.Message):
    __slots__ = ("session_id", "player_id", "expires_at_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    player_id: str
    expires_at_ms: int
    def __init__(self, session_id: _Optional[str] = ..., player_id: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class CreatePlayerReq(_message.Message):
    __slots__ = ("player_id", "currency", "idempotency_key")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    currency: str
    idempotency_key: str
    def __init__(self, player_id: _Optional[str] = ..., currency: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreatePlayerRes(_message.Message):
    __slots__ = ("player_id", "currency", "available", "held")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    currency: str
    available: Money
    held: Money
    def __init__(self, player_id: _Optional[str] = ..., currency: _Optional[str] = ..., available: _Optional[_Union[Money, _Mapping]] = ..., held: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class AdjustReq(_message.Message):
    __slots__ = ("player_id", "amount", "reason", "idempotency_key")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    player_id: str
    amount: Money
    reason: str
    idempotency_key: str
    def __init__(self, player_id: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., reason: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class AdjustRes(_message.Message):
    __slots__ = ("status", "balance", "held", "player_id", "transaction_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    status: str
    balance: Money
    held: Money
    player_id: str
    transaction_id: str
    def __init__(self, status: _Optional[str] = ..., balance: _Optional[_Union[Money, _Mapping]] = ..., held: _Optional[_Union[Money, _Mapping]] = ..., player_id: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...
