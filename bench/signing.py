"""In-process measurements of signing and verifying, for ``bench/delivery.py``.

- verify: verifications per second of croupier's receiver SDK against the
  ``standardwebhooks`` package, on the same ~1 KiB payload and headers, in alternating
  rounds (the SDK also parses the body into an ``Event``, as the package parses it to JSON);
- sign: CPU microseconds per signature of each dialect on a delivery-sized envelope, which
  ``delivery.py`` compares with croupier's whole CPU per delivery measured in the same run.
"""

from __future__ import annotations

import base64
import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from croupier.domain.signing import DIALECTS, generate_secret, signer_for
from croupier.receiver import Verifier

PAYLOAD = orjson.dumps(
    {
        "id": "evt_01JD5K8ZQ3W4X5Y6Z7A8B9C0D1",
        "type": "round.completed",
        "schema_version": "1.0.0",
        "tenant_id": "default",
        "occurred_at": "2026-11-21T10:36:17.940Z",
        "delivered_at": "2026-11-21T10:36:18.144Z",
        "data": {"roundId": "rnd_8c12f0a4", "pad": "x" * 700},
        "meta": {"attempt": 1, "environment": "bench", "trace_id": "0" * 32},
    }
)
VERIFY_ROUNDS = 5
VERIFY_COUNT = 20_000
SIGN_COUNT = 5_000


def measure_verify(
    rounds: int = VERIFY_ROUNDS, count: int = VERIFY_COUNT, deadline_s: float = 60.0
) -> dict[str, Any]:
    """Verifications/s of both, alternating rounds; the ratio of the medians."""
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    msg_id = "evt_01JD5K8ZQ3W4X5Y6Z7A8B9C0D1"
    now = datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, now, PAYLOAD.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    ours = Verifier("standard", secret)
    theirs = Webhook(secret)
    text = PAYLOAD.decode()
    ours.verify(headers, PAYLOAD)  # both accept it before anything is timed
    theirs.verify(text, headers)
    rates: dict[str, list[float]] = {"sdk": [], "standardwebhooks": []}
    end = time.monotonic() + deadline_s
    for _ in range(rounds):
        if time.monotonic() > end:
            break
        t0 = time.perf_counter()
        for _ in range(count):
            ours.verify(headers, PAYLOAD)
        rates["sdk"].append(count / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(count):
            theirs.verify(text, headers)
        rates["standardwebhooks"].append(count / (time.perf_counter() - t0))
    sdk, pkg = statistics.median(rates["sdk"]), statistics.median(rates["standardwebhooks"])
    return {
        "payload_bytes": len(PAYLOAD),
        "rounds": len(rates["sdk"]),
        "per_round": rates,
        "sdk_per_s": sdk,
        "standardwebhooks_per_s": pkg,
        "ratio": sdk / pkg,
    }


def measure_signing(count: int = SIGN_COUNT) -> dict[str, Any]:
    """CPU microseconds per signature, per dialect, with one secret and with two (a rotation)."""
    out: dict[str, Any] = {"payload_bytes": len(PAYLOAD)}
    for dialect in DIALECTS:
        figures: dict[str, float] = {}
        for label, n_secrets in (("one_secret_us", 1), ("two_secrets_us", 2)):
            signer = signer_for(dialect, [generate_secret(dialect) for _ in range(n_secrets)])
            signer.sign("evt_1", 1_763_750_000, PAYLOAD)
            best = float("inf")
            for _ in range(3):  # the least disturbed of three runs
                t0 = time.process_time()
                for i in range(count):
                    signer.sign("evt_1", 1_763_750_000 + i, PAYLOAD)
                best = min(best, (time.process_time() - t0) / count * 1e6)
            figures[label] = best
        out[dialect] = figures
    return out
