"""``croupier listen``: the local receiver, in-process and as the real command.

In-process, the listener runs on port 0 in a thread and prints to a captured console; the
requests are signed with :func:`croupier.receiver.testing.sign`, as croupier would sign them.
As a command it receives a real delivery from a real ``croupier serve`` and stops on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from croupier.cli import app
from croupier.listen import BODY_SHOWN_BYTES, Listener, serve_listener
from croupier.receiver.testing import (
    envelope_body,
    generate_ed25519_keypair,
    generate_secret,
    sign,
)
from tests.e2e.harness import (
    Launcher,
    create_endpoint,
    eventually,
    free_port,
    publish,
    wait_statuses,
)

SECRET = generate_secret()
EVENT_ID = "evt_listen_1"


class Running:
    """A listener serving in a thread, and what it printed."""

    def __init__(self, listener: Listener, out: io.StringIO) -> None:
        self.listener = listener
        self.out = out
        self.client = httpx.Client(timeout=5.0)

    @property
    def printed(self) -> str:
        return self.out.getvalue()

    def post(
        self,
        body: bytes,
        headers: dict[str, str],
        path: str = "/webhooks",
    ) -> httpx.Response:
        return self.client.post(
            f"http://127.0.0.1:{self.listener.port}{path}", content=body, headers=headers
        )

    def deliver(self, event_id: str = EVENT_ID, **extra: Any) -> httpx.Response:
        """A correctly signed envelope of ``round.completed``, as croupier sends it."""
        body = envelope_body("round.completed", {"roundId": "r1", **extra}, event_id=event_id)
        return self.post(body, sign("standard", SECRET, body, msg_id=event_id))


Start = Callable[..., Running]


@pytest.fixture
def start() -> Iterator[Start]:
    """``start(**options)`` runs one more listener; all are stopped and closed afterwards."""
    started: list[tuple[Running, threading.Thread]] = []

    def run(secrets: str | list[str] = SECRET, **options: Any) -> Running:
        out = io.StringIO()
        console = Console(file=out, width=160, color_system=None, force_terminal=False)
        listener = serve_listener(secrets, port=0, console=console, **options)
        # A short poll keeps shutdown() quick.
        thread = threading.Thread(target=listener.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running = Running(listener, out)
        started.append((running, thread))
        return running

    yield run
    for running, thread in started:
        running.client.close()
        running.listener.shutdown()
        running.listener.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the listener did not stop"


def test_a_verified_delivery_is_answered_200_and_printed_with_its_body(start: Start) -> None:
    running = start()

    answer = running.deliver(player="ünïcode ✓")

    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "id": EVENT_ID}
    printed = running.printed
    assert "POST /webhooks" in printed
    assert f"event     {EVENT_ID}" in printed
    assert "type      round.completed" in printed
    assert "attempt   1" in printed
    assert "verified  OK" in printed
    assert "answered  200" in printed
    assert '"roundId": "r1"' in printed, "the body is pretty-printed"
    assert "ünïcode ✓" in printed
    assert "DUPLICATE" not in printed
    assert SECRET not in printed
    received = running.listener.received
    assert [(r.event_id, r.status, r.verified) for r in received] == [(EVENT_ID, 200, True)]


def test_a_tampered_body_is_answered_400_and_the_reason_is_printed(start: Start) -> None:
    running = start()
    body = envelope_body("round.completed", {"roundId": "r1"}, event_id=EVENT_ID)
    headers = sign("standard", SECRET, body, msg_id=EVENT_ID)

    answer = running.post(body.replace(b'"r1"', b'"r2"'), headers)

    assert answer.status_code == 400
    assert answer.json()["error"] == "signature"
    printed = running.printed
    assert "FAILED signature: no v1 signature in webhook-signature matches" in printed
    assert f"{EVENT_ID}  (unverified)" in printed
    assert "answered  400" in printed
    assert "verified  OK" not in printed


def test_a_stale_timestamp_is_refused_as_a_timestamp_error(start: Start) -> None:
    running = start(tolerance_s=60)
    body = envelope_body("round.completed", {"roundId": "r1"}, event_id=EVENT_ID)
    stale = sign("standard", SECRET, body, msg_id=EVENT_ID, timestamp=int(time.time()) - 120)

    answer = running.post(body, stale)

    assert answer.status_code == 400
    assert "FAILED timestamp:" in running.printed
    assert "tolerance is 60 s" in running.printed


def test_a_repeated_event_is_answered_200_and_marked_duplicate(start: Start) -> None:
    running = start()

    first = running.deliver()
    again = running.deliver()

    assert first.status_code == 200
    assert again.status_code == 200
    assert again.json() == {"duplicate": True, "id": EVENT_ID}
    assert running.printed.count("DUPLICATE: this event id was handled already") == 1
    assert [r.duplicate for r in running.listener.received] == [False, True]


def test_status_503_answers_every_verified_copy_so_each_retry_is_shown_afresh(
    start: Start,
) -> None:
    running = start(status=503)

    answers = [running.deliver().status_code for _ in range(2)]

    assert answers == [503, 503]
    assert running.printed.count("answered  503") == 2
    assert "DUPLICATE" not in running.printed, "a copy answered 503 is not a handled one"


def test_fail_first_answers_500_to_the_first_copies_of_each_event_then_the_status(
    start: Start,
) -> None:
    running = start(fail_first=1)

    first, retry, repeat = (running.deliver().status_code for _ in range(3))
    other = running.deliver("evt_listen_2").status_code

    assert (first, retry, repeat, other) == (500, 200, 200, 500)
    assert running.printed.count("answered  500 (--fail-first)") == 2
    assert [r.failed_on_purpose for r in running.listener.received] == [True, False, False, True]
    assert [r.duplicate for r in running.listener.received] == [False, False, True, False]


def test_bearer_with_a_wrong_key_is_answered_401_and_the_right_key_200(start: Start) -> None:
    key = "example-bearer-key-0123456789"
    running = start(key, dialect="bearer")
    body = envelope_body("round.completed", {"roundId": "r1"}, event_id=EVENT_ID)

    wrong = running.post(
        body, sign("bearer", "example-other-key-0123456789", body, msg_id=EVENT_ID)
    )
    right = running.post(body, sign("bearer", key, body, msg_id=EVENT_ID))

    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert right.status_code == 200
    assert "FAILED signature: bearer token matches no configured key" in running.printed
    assert key not in running.printed


def test_hmac_hex_with_a_header_prefix_and_ed25519_verify_as_croupier_signs_them(
    start: Start,
) -> None:
    shared = "example-shared-secret-0123456789"
    hexed = start(shared, dialect="hmac-hex", header_prefix="Example")
    private, public = generate_ed25519_keypair()
    edwards = start(public, dialect="ed25519")
    body = envelope_body("round.completed", {"roundId": "r1"}, event_id=EVENT_ID)

    hex_answer = hexed.post(
        body, sign("hmac-hex", shared, body, msg_id=EVENT_ID, header_prefix="Example")
    )
    ed_answer = edwards.post(body, sign("ed25519", private, body, msg_id=EVENT_ID))

    hexed.listener.print_banner()
    assert (hex_answer.status_code, ed_answer.status_code) == (200, 200)
    assert "X-Example-Signature" in hexed.printed, "the banner names the headers expected"
    assert shared not in hexed.printed


def test_during_a_rotation_either_secret_is_accepted(start: Start) -> None:
    old, new = generate_secret(), generate_secret()
    running = start([old, new])
    body = envelope_body("round.completed", {"roundId": "r1"}, event_id=EVENT_ID)

    answer = running.post(body, sign("standard", [generate_secret(), old], body, msg_id=EVENT_ID))

    assert answer.status_code == 200


def test_the_flat_data_format_takes_its_id_from_webhook_id(start: Start) -> None:
    running = start()
    body = json.dumps({"roundId": "r1", "event_type": "round.completed"}).encode()

    answer = running.post(body, sign("standard", SECRET, body, msg_id="evt_flat"))

    assert answer.status_code == 200
    assert "event     evt_flat" in running.printed
    assert "attempt   -" in running.printed


def test_a_large_body_is_printed_truncated(start: Start) -> None:
    running = start()

    answer = running.deliver(padding="x" * (3 * BODY_SHOWN_BYTES))

    assert answer.status_code == 200
    assert "... truncated:" in running.printed
    assert running.printed.count("x") < 2 * BODY_SHOWN_BYTES


def test_the_banner_gives_the_url_and_dialect_and_never_the_secret(start: Start) -> None:
    running = start()

    running.listener.print_banner()

    printed = running.printed
    assert f"http://127.0.0.1:{running.listener.port}/webhooks" in printed
    assert "standard" in printed
    assert "croupier serve --dev" in printed
    assert SECRET not in printed
    assert SECRET.removeprefix("whsec_") not in printed


def test_a_request_without_a_length_is_refused_411_and_get_explains_the_url(
    start: Start,
) -> None:
    running = start()
    url = f"http://127.0.0.1:{running.listener.port}/webhooks"

    def chunks() -> Iterator[bytes]:
        yield b"{}"

    chunked = running.client.post(url, content=chunks())
    looked_at = running.client.get(url)

    assert chunked.status_code == 411
    assert looked_at.status_code == 200
    assert "POST" in looked_at.text


def test_listen_help_lists_every_option() -> None:
    result = CliRunner().invoke(app, ["listen", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    for option in (
        "--port",
        "--dialect",
        "--secret",
        "--header-prefix",
        "--status",
        "--fail-first",
        "--host",
        "--tolerance",
    ):
        assert option in result.output


def test_listen_refuses_a_key_of_the_wrong_kind_without_repeating_it() -> None:
    _, public = generate_ed25519_keypair()

    result = CliRunner().invoke(
        app, ["listen", "--port", "0", "--dialect", "standard", "--secret", public]
    )

    assert result.exit_code == 2
    assert "ed25519 key" in result.output
    assert public not in result.output


@pytest.mark.slow
async def test_the_command_shows_a_real_delivery_retried_after_fail_first_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "listen.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")}
    # From the environment, as an integrator would keep it out of the shell history.
    env |= {"CROUPIER_WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    command = [sys.executable, "-m", "croupier.cli", "listen", "--port", str(port)]
    launcher = Launcher(f"sqlite:///{tmp_path}/croupier.db", tmp_path)
    with log.open("wb") as out:
        listen = await asyncio.create_subprocess_exec(
            *command,
            "--fail-first",
            "1",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await eventually(
            lambda: "endpoint url" in log.read_text(), within_s=20, what="the listen banner"
        )
        serve = await launcher.serve()
        async with serve.api() as api:
            await create_endpoint(
                api, f"http://127.0.0.1:{port}/webhooks", secret=SECRET, retry_schedule=[0, 1]
            )
            await publish(api, "evt_listen_real")
            await wait_statuses(api, {"succeeded": 1}, within_s=20)
            (delivery,) = (await api.get("/v1/deliveries")).json()["data"]
            assert delivery["attempts"] == 2, "croupier retried the 500 of --fail-first"
        listen.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(listen.wait(), 10) == 0
    finally:
        if listen.returncode is None:
            listen.kill()
            await asyncio.wait_for(listen.wait(), 10)
        launcher.kill_all()
    printed = log.read_text()
    assert f"http://127.0.0.1:{port}/webhooks" in printed
    assert "event     evt_listen_real" in printed
    assert "answered  500 (--fail-first)" in printed
    assert "attempt   2" in printed
    assert "verified  OK" in printed
    assert "stopped" in printed
    assert SECRET not in printed
