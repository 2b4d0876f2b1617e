"""Shared values and helpers of the receiver SDK's tests."""

from __future__ import annotations

import base64
import os

from croupier.receiver.testing import envelope_body

# A fixed "now" for the injected clocks: 2023-11-14T22:13:20Z.
NOW = 1_700_000_000
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 124))).decode()
HEX_SECRET = "example_shared_secret_0123456789"
API_KEY = "ck_live_receiver_key_0123456789abcdef"
EVENT_ID = "evt_0001"
REDIS_PORT = int(os.environ.get("CROUPIER_TEST_REDIS_PORT", "6379"))
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"


class Clock:
    """A clock the test moves by hand; time never passes on its own."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def round_completed_body(event_id: str = EVENT_ID, *, attempt: int = 1) -> bytes:
    """A round.completed envelope, as croupier posts it."""
    return envelope_body(
        "round.completed",
        {
            "roundId": "rnd_8c12f0a4",
            "gameId": "book-of-dice",
            "playerId": "plr_19f3",
            "externalPlayerId": "op-user-7741",
            "betAmount": 2.0,
            "winAmount": 14.6,
            "currency": "EUR",
            "rtp": 7.3,
            "duration": 1.2,
            "provablyFair": {"serverSeedHash": "ab12", "clientSeed": "cd34", "nonce": 7},
        },
        event_id=event_id,
        attempt=attempt,
        occurred_at="2023-11-14T22:13:19.500Z",
    )
