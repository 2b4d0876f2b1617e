"""The receiver SDK stands alone: no other croupier module, no optional dependency."""

from __future__ import annotations

import json
import subprocess
import sys

# Runs in a fresh interpreter: verifies one request per stdlib-only dialect, then reports
# every module it loaded. The signatures are computed inline so that nothing but
# croupier.receiver is imported to make them.
SCRIPT = r"""
import base64, hashlib, hmac, json, sys, time

import croupier.receiver
from croupier.receiver import MemoryDedupe, SQLiteDedupe, Verifier

now = int(time.time())
body = json.dumps({"id": "evt_1", "type": "round.completed", "data": {"a": 1}}).encode()
key = bytes(range(32))
secret = "whsec_" + base64.b64encode(key).decode()
v1 = base64.b64encode(hmac.digest(key, f"evt_1.{now}.".encode() + body, "sha256")).decode()
Verifier("standard", secret).verify(
    {"webhook-id": "evt_1", "webhook-timestamp": str(now), "webhook-signature": "v1," + v1},
    body,
)
hex_sig = hmac.new(b"shared", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
Verifier("hmac-hex", "shared").verify(
    {"X-Croupier-Signature": "sha256=" + hex_sig, "X-Croupier-Timestamp": str(now)}, body
)
Verifier("bearer", "api_key").verify({"Authorization": "Bearer api_key"}, body)
assert MemoryDedupe().claim("evt_1")
with SQLiteDedupe(":memory:") as dedupe:
    assert dedupe.claim("evt_1")
print(json.dumps(sorted(sys.modules)))
"""

FORBIDDEN_ROOTS = {"pydantic", "cryptography", "redis", "fastapi", "starlette", "flask", "django"}


def test_importing_and_verifying_loads_no_other_croupier_module_and_no_optional_package() -> None:
    result = subprocess.run(  # noqa: S603 - a fixed script run by this interpreter
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    modules: list[str] = json.loads(result.stdout)
    croupier_modules = [m for m in modules if m == "croupier" or m.startswith("croupier.")]
    assert "croupier.receiver.verify" in croupier_modules
    strays = [
        m for m in croupier_modules if m != "croupier" and not m.startswith("croupier.receiver")
    ]
    assert strays == []
    loaded_roots = {m.partition(".")[0] for m in modules}
    assert loaded_roots & FORBIDDEN_ROOTS == set()


def test_the_receiver_sources_import_nothing_else_from_croupier() -> None:
    from pathlib import Path

    import croupier.receiver

    package = Path(croupier.receiver.__file__).parent
    for source in package.rglob("*.py"):
        for line in source.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                module = words[1]
                if module.startswith("croupier"):
                    assert module.startswith("croupier.receiver"), (source.name, line)
