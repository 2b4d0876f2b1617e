"""The verification code in ``docs/dialects/*.md`` works against what croupier really sends.

Each page marks its by-hand snippets with ``<!-- tested: js NAME -->`` or
``<!-- tested: python NAME -->`` just above the code block. The JavaScript runs under
``node`` with a small harness appended; the Python is executed in a fresh namespace. Both are
fed requests signed by croupier's own signers (:func:`croupier.domain.signing.signer_for`)
over bodies rendered by croupier's own envelope code, and must accept the genuine ones and
refuse, with their own ``InvalidWebhook``, every forgery. Node.js is required: without it
these tests fail rather than skip, since the Node snippets would otherwise go untested.

Each page's example request (``<!-- vector: DIALECT KEY -->``) must verify with the SDK at its
own timestamp, and the Node example must carry the tested functions character for character.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from croupier.domain.envelope import render_data, render_envelope
from croupier.domain.events import Event
from croupier.domain.signing import generate_secret, public_key, signer_for
from croupier.receiver import DIALECTS, Dialect, SignatureError, Verifier

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "dialects"
NODE_EXAMPLE = ROOT / "examples" / "node_receiver.js"
MARKED_BLOCK = re.compile(
    r"<!-- tested: (?P<lang>js|python) (?P<name>\w+) -->\s*\n```(?P<fence>\w+)\n(?P<code>.*?)\n```",
    re.DOTALL,
)
VECTOR = re.compile(
    r"<!-- vector: (?P<dialect>[\w-]+) (?P<key>\S+) -->\s*\n```http\n(?P<request>.*?)\n```",
    re.DOTALL,
)
FENCES = {"js": {"js", "javascript"}, "python": {"python"}}
NODE_TIMEOUT_S = 30


def snippets(dialect: str) -> dict[str, tuple[str, str]]:
    """``{language: (function name, code)}`` of the page's tested blocks."""
    text = (PAGES / f"{dialect}.md").read_text()
    found: dict[str, tuple[str, str]] = {}
    for match in MARKED_BLOCK.finditer(text):
        lang = match["lang"]
        assert match["fence"] in FENCES[lang], f"{dialect}.md: {match['name']} is not fenced {lang}"
        assert lang not in found, f"{dialect}.md marks two {lang} blocks"
        found[lang] = (match["name"], match["code"])
    return found


# -- requests as croupier signs them ---------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request, the keys the receiver holds, and whether it must be accepted."""

    name: str
    keys: list[str]
    headers: dict[str, str]
    body: bytes
    accept: bool
    prefix: str = "Croupier"
    expected: Any = field(default=None)


def _event(event_id: str) -> Event:
    data = {"player_id": "plr ünïcode ✓ 🎰", "note": 'quotes " and \\ and /', "amount": 2.0}
    return Event(
        id=event_id,
        tenant_id="tn_docs",
        type="PLAYER_OPTED_IN",
        schema_version="1.0.0",
        data_json=orjson.dumps(data),
        occurred_at_ms=1_795_257_378_000,
        created_at_ms=1_795_257_378_000,
        trace_id="62aca1f284a5436db5239f76e273cdb6",
    )


def _signing_keys(dialect: str) -> tuple[str, str]:
    """(what croupier signs with, what the receiver holds) for a fresh key of ``dialect``.

    croupier's own generator: hmac-hex secrets then look like ``whsec_...``, whose prefix is
    part of the key, and bearer keys are random tokens.
    """
    signing = generate_secret(dialect)
    return signing, public_key(signing) if dialect == "ed25519" else signing


def _request(
    dialect: str,
    signing: list[str],
    body: bytes,
    *,
    event_id: str,
    at: int | None = None,
    prefix: str = "Croupier",
) -> dict[str, str]:
    signer = signer_for(dialect, signing, header_prefix=prefix)
    signed = signer.sign(event_id, int(time.time()) if at is None else at, body)
    return {"Content-Type": "application/json", "X-Trace-Id": "docs-trace", **signed}


def cases(dialect: str) -> list[Case]:
    old_signing, old_key = _signing_keys(dialect)
    new_signing, new_key = _signing_keys(dialect)
    event = _event("evt_docs_1")
    now_ms = int(time.time() * 1000)
    envelope = render_envelope(event, attempt=1, delivered_at_ms=now_ms, environment="docs")
    flat = render_data(event)
    parsed = json.loads(envelope)

    def req(body: bytes = envelope, signing: list[str] | None = None, **kw: Any) -> dict[str, str]:
        return _request(dialect, signing or [old_signing], body, event_id=event.id, **kw)

    out = [
        Case("genuine envelope", [old_key], req(), envelope, True, expected=parsed),
        Case("genuine data format", [old_key], req(flat), flat, True, expected=json.loads(flat)),
        Case("signed with another key", [old_key], req(signing=[new_signing]), envelope, False),
        Case(
            "rotation: the receiver knows the old key",
            [old_key],
            req(signing=[new_signing, old_signing]),
            envelope,
            # A bearer request carries one key, the new one, from the moment of rotation.
            dialect != "bearer",
            expected=parsed,
        ),
        Case(
            "rotation: the receiver knows the new key",
            [new_key],
            req(signing=[new_signing, old_signing]),
            envelope,
            True,
            expected=parsed,
        ),
        Case(
            "the receiver knows both keys",
            [old_key, new_key],
            req(signing=[new_signing]),
            envelope,
            True,
            expected=parsed,
        ),
    ]
    signature_header = {
        "standard": "webhook-signature",
        "ed25519": "webhook-signature",
        "hmac-hex": "X-Croupier-Signature",
        "bearer": "Authorization",
    }[dialect]
    unsigned = {k: v for k, v in req().items() if k != signature_header}
    out.append(Case("no signature header", [old_key], unsigned, envelope, False))
    if dialect == "bearer":
        # Nothing but the token is checked: the body and the time are not signed.
        short = {**req(), "Authorization": req()["Authorization"][:-1]}
        out.append(Case("a token one character short", [old_key], short, envelope, False))
        return out
    tampered = envelope.replace(b'"attempt":1', b'"attempt":2', 1)
    assert tampered != envelope
    out += [
        Case("tampered body", [old_key], req(), tampered, False),
        Case("a stale timestamp", [old_key], req(at=int(time.time()) - 600), envelope, False),
        Case("a future timestamp", [old_key], req(at=int(time.time()) + 600), envelope, False),
    ]
    if dialect in ("standard", "ed25519"):
        other_id = {**req(), "webhook-id": "evt_docs_other"}
        out.append(Case("another webhook-id", [old_key], other_id, envelope, False))
    if dialect == "hmac-hex":
        example = req(prefix="Example")
        out += [
            Case("another header prefix", [old_key], example, envelope, True, "Example", parsed),
            Case("the wrong header prefix", [old_key], example, envelope, False, "Croupier"),
        ]
    return out


# -- running the snippets --------------------------------------------------------------------

NODE_HARNESS = """
;(() => {
  const input = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
  const results = input.map((c) => {
    try {
      const parsed = %(name)s(c.keys, c.headers, Buffer.from(c.body, "base64"), c.prefix);
      return { accepted: true, parsed };
    } catch (err) {
      return { accepted: false, ours: err instanceof InvalidWebhook, error: String(err) };
    }
  });
  process.stdout.write(JSON.stringify(results));
})();
"""


def run_node(code: str, name: str, batch: list[Case], tmp_path: Path) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None, "Node.js (node) is needed to test the dialect pages' snippets"
    script = tmp_path / f"{name}.js"
    script.write_text(code + "\n" + NODE_HARNESS % {"name": name})
    payload = [
        {
            # Node hands a handler lower-case header names.
            "headers": {k.lower(): v for k, v in case.headers.items()},
            "keys": case.keys,
            "body": base64.b64encode(case.body).decode(),
            "prefix": case.prefix,
        }
        for case in batch
    ]
    done = subprocess.run(  # noqa: S603 - node on a file this test wrote
        [node, str(script)],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def load_python(code: str, name: str) -> tuple[Callable[..., Any], type[Exception]]:
    namespace: dict[str, Any] = {"__name__": f"docs_snippet_{name}"}
    exec(compile(code, f"<docs {name}>", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace[name], cast(type[Exception], namespace["InvalidWebhook"])


def as_http_message(headers: dict[str, str]) -> http.client.HTTPMessage:
    """The headers as ``http.server`` hands them to a handler: original case, looked up in any."""
    message = http.client.HTTPMessage()
    for name, value in headers.items():
        message[name] = value
    return message


# -- the tests -------------------------------------------------------------------------------


def test_every_dialect_has_a_page_with_a_tested_node_and_python_snippet() -> None:
    for dialect in DIALECTS:
        found = snippets(dialect)
        assert set(found) == {"js", "python"}, f"{dialect}.md marks {sorted(found)}"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_node_snippet_accepts_what_croupier_signs_and_refuses_forgeries(
    dialect: str, tmp_path: Path
) -> None:
    name, code = snippets(dialect)["js"]
    batch = cases(dialect)

    results = run_node(code, name, batch, tmp_path)

    assert len(results) == len(batch)
    for case, result in zip(batch, results, strict=True):
        assert result["accepted"] is case.accept, f"{case.name}: {result}"
        if case.accept:
            assert result["parsed"] == case.expected, case.name
        else:
            assert result["ours"], f"{case.name}: refused by a crash, not a check: {result}"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_python_snippet_accepts_what_croupier_signs_and_refuses_forgeries(
    dialect: str,
) -> None:
    name, code = snippets(dialect)["python"]
    verify, invalid = load_python(code, name)

    for case in cases(dialect):
        extra = {"prefix": case.prefix} if dialect == "hmac-hex" else {}
        for headers in (
            {k.lower(): v for k, v in case.headers.items()},
            as_http_message(case.headers),
        ):
            if case.accept:
                assert verify(case.keys, headers, case.body, **extra) == case.expected, case.name
            else:
                with pytest.raises(invalid):
                    verify(case.keys, headers, case.body, **extra)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_example_request_on_the_page_verifies_with_the_sdk(dialect: str) -> None:
    text = (PAGES / f"{dialect}.md").read_text()
    (match,) = VECTOR.finditer(text)
    assert match["dialect"] == dialect
    head, body = match["request"].split("\n\n", 1)
    request_line, *header_lines = head.splitlines()
    assert request_line == "POST /webhooks HTTP/1.1"
    pairs = [cast(tuple[str, str], tuple(line.split(": ", 1))) for line in header_lines]
    sent_at = next((int(v) for n, v in pairs if n.lower().endswith("timestamp")), 0)
    verifier = Verifier(cast(Dialect, dialect), match["key"], now=lambda: sent_at)

    event = verifier.verify(pairs, body.encode())

    assert event.id == dict(pairs)["webhook-id"]
    assert event.type == "PLAYER_OPTED_IN"
    if dialect == "bearer":
        stranger = Verifier("bearer", "example-other-api-key-0000")
        with pytest.raises(SignatureError):
            stranger.verify(pairs, body.encode())
    else:
        with pytest.raises(SignatureError):
            verifier.verify(pairs, body.replace('"attempt":1', '"attempt":2').encode())


def test_the_node_example_carries_the_tested_functions_character_for_character() -> None:
    example = NODE_EXAMPLE.read_text()
    for dialect in DIALECTS:
        name, code = snippets(dialect)["js"]
        # The function with the comment lines just above it, to its closing brace.
        found = re.search(rf"(?://[^\n]*\n)*function {name}\(.*?\n}}\n", code + "\n", re.DOTALL)
        assert found is not None, f"{dialect}.md: no function {name}"
        assert found[0] in example, f"{name} in {dialect}.md differs from node_receiver.js"
