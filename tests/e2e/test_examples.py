"""The receivers in ``examples/`` against a real ``croupier serve``.

Each example runs as its own process on a free port, started the way its README says, with
the endpoint's secret in its environment. croupier delivers to it; the example's one line per
request (``accepted ...``, ``duplicate ...``, ``refused ...``) and croupier's delivery status
show that it verified, accepted, and recognised a repeat. A second endpoint holding another
secret is the negative control: the example must refuse what it signs.

One croupier (SQLite) serves the whole file, and each test works in a tenant of its own, so
the tests cannot see each other's endpoints or deliveries. The examples are about the
receiving side; croupier's storage backends are covered by the rest of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from croupier.receiver.testing import generate_ed25519_keypair, generate_secret
from tests.e2e.harness import (
    EVENT_TYPE,
    Launcher,
    Serve,
    create_endpoint,
    deliveries,
    eventually,
    free_port,
    publish,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: An example that has not opened its port by then has failed to start.
START_WITHIN_S = 30.0
ARRIVE_WITHIN_S = 20.0


# -- one croupier for the file ---------------------------------------------------------------


@pytest.fixture(scope="module")
def croupier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    workdir = tmp_path_factory.mktemp("croupier-examples")
    launcher = Launcher(f"sqlite:///{workdir}/croupier.db", workdir)
    try:
        serve = launcher.start()
        _wait_healthy(serve, within_s=30.0)
        yield serve
    finally:
        launcher.kill_all()


def _wait_healthy(serve: Serve, *, within_s: float) -> None:
    """Until ``GET /health`` answers; synchronous, as a module fixture has no event loop."""
    deadline = time.monotonic() + within_s
    with httpx.Client(timeout=2.0) as client:
        while True:
            if serve.proc.poll() is not None:
                raise AssertionError(f"croupier serve exited early:\n{serve.output()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{serve.url}/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"croupier serve not ready in {within_s} s:\n{serve.output()}")
            time.sleep(0.05)


@pytest.fixture
async def api(croupier: Serve) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a tenant made for this test alone."""
    async with croupier.api() as admin:
        made = await admin.post("/v1/tenants", json={"name": f"ex-{uuid.uuid4().hex[:12]}"})
        assert made.status_code == 201, made.text
        issued = await admin.post(f"/v1/tenants/{made.json()['id']}/keys", json={"name": "ex"})
        assert issued.status_code == 201, issued.text
    async with croupier.api(issued.json()["key"]) as client:
        yield client


# -- an example as a subprocess --------------------------------------------------------------


class Example:
    """One running example; its stdout and stderr go to a file the test reads."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.output().splitlines() if line.startswith(prefix)]

    async def wait_listening(self) -> None:
        """Until the port accepts connections; fail early, with the log, if it exits."""
        deadline = time.monotonic() + START_WITHIN_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the example exited with {self.proc.returncode}:\n{self.output()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the example did not listen within {START_WITHIN_S} s")
            await asyncio.sleep(0.05)

    async def wait_output(self, text: str) -> None:
        await eventually(
            lambda: text in self.output(), within_s=ARRIVE_WITHIN_S, what=f"{text!r} printed"
        )


@contextlib.contextmanager
def running(
    command: Sequence[str], workdir: Path, *, secret: str, dialect: str, prefix: str = "Croupier"
) -> Iterator[Example]:
    """Start an example as its README says; always stop it, whatever the test did."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")}
    env |= {
        "CROUPIER_WEBHOOK_SECRET": secret,
        "CROUPIER_WEBHOOK_DIALECT": dialect,
        "CROUPIER_WEBHOOK_HEADER_PREFIX": prefix,
        "PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    log = workdir / "example.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter or node, our own files
            list(command),
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Example(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


# -- what every example must do --------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """What croupier signs with, what the receiver verifies with, and a stranger's key."""

    signing: str
    verifying: str
    forged: str


def keys_for(dialect: str) -> Keys:
    if dialect == "standard":
        secret = generate_secret()
        return Keys(secret, secret, forged=generate_secret())
    if dialect == "ed25519":
        private, public = generate_ed25519_keypair()
        return Keys(private, public, forged=generate_ed25519_keypair()[0])
    # hmac-hex and bearer: a shared string, used as it is.
    shared = f"example-shared-{secrets.token_hex(16)}"
    return Keys(shared, shared, forged=f"example-other-{secrets.token_hex(16)}")


async def exercise(
    example: Example,
    api: httpx.AsyncClient,
    *,
    dialect: str,
    keys: Keys,
    prefix: str = "Croupier",
    body_format: str = "envelope",
) -> None:
    """Deliveries verified and accepted, a repeat reported, a forgery refused."""
    await example.wait_listening()
    fields: dict[str, Any] = {
        "dialect": dialect,
        "header_prefix": prefix,
        "format": body_format,
        "retry_schedule": [0],
    }
    endpoint = await create_endpoint(api, example.url, secret=keys.signing, **fields)
    run = uuid.uuid4().hex[:8]
    ids = [f"evt_{run}_1", f"evt_{run}_2"]
    for event_id in ids:
        await publish(api, event_id)
    for event_id in ids:
        await example.wait_output(f"accepted {EVENT_TYPE} {event_id} ")
    await _wait_endpoint(api, endpoint["id"], {"succeeded": 2})
    attempt = "attempt=1" if body_format == "envelope" else "attempt=None"
    assert all(attempt in line for line in example.lines("accepted")), example.output()

    # The same event again, as after a lost answer: acknowledged, reported, not handled twice.
    first = next(
        d for d in await deliveries(api, endpoint_id=endpoint["id"]) if d["event_id"] == ids[0]
    )
    retried = await api.post(f"/v1/deliveries/{first['id']}/retry")
    assert retried.status_code == 202, retried.text
    await example.wait_output(f"duplicate {ids[0]}")
    await _wait_endpoint(api, endpoint["id"], {"succeeded": 2}, attempts={first["id"]: 2})
    assert len(example.lines(f"accepted {EVENT_TYPE} {ids[0]} ")) == 1

    # Another endpoint, another secret, the same receiver: everything it signs is refused.
    forged = await create_endpoint(api, example.url, secret=keys.forged, **fields)
    await publish(api, f"evt_{run}_3")
    refusal = 401 if dialect == "bearer" else 400
    await example.wait_output(f"refused {refusal}")
    await _wait_endpoint(api, forged["id"], {"dead": 1})
    dead = await deliveries(api, endpoint_id=forged["id"])
    assert dead[0]["last_status_code"] == refusal
    await _wait_endpoint(api, endpoint["id"], {"succeeded": 3})
    assert keys.verifying not in example.output()
    assert keys.signing not in example.output()


async def _wait_endpoint(
    api: httpx.AsyncClient,
    endpoint_id: str,
    expected: dict[str, int],
    *,
    attempts: dict[str, int] | None = None,
) -> None:
    """Until the endpoint's deliveries are exactly ``expected`` by status (and attempts)."""
    seen: list[dict[str, Any]] = []

    async def settled() -> bool:
        nonlocal seen
        seen = await deliveries(api, endpoint_id=endpoint_id)
        counts: dict[str, int] = {}
        for d in seen:
            counts[d["status"]] = counts.get(d["status"], 0) + 1
        by_id = {d["id"]: d["attempts"] for d in seen}
        return counts == expected and all(by_id.get(k) == n for k, n in (attempts or {}).items())

    deadline = time.monotonic() + ARRIVE_WITHIN_S
    while not await settled():
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of {endpoint_id}: wanted {expected}, saw {seen}")
        await asyncio.sleep(0.1)


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "dialect", "prefix", "body_format"),
    [
        ("fastapi_receiver.py", "standard", "Croupier", "envelope"),
        ("flask_receiver.py", "hmac-hex", "Example", "data"),
        ("django_receiver.py", "ed25519", "Croupier", "envelope"),
    ],
)
async def test_the_python_example_accepts_deliveries_reports_a_repeat_and_refuses_a_forgery(
    croupier: Serve,
    api: httpx.AsyncClient,
    tmp_path: Path,
    example: str,
    dialect: str,
    prefix: str,
    body_format: str,
) -> None:
    keys = keys_for(dialect)
    command = [sys.executable, str(EXAMPLES / example)]
    with running(command, tmp_path, secret=keys.verifying, dialect=dialect, prefix=prefix) as ex:
        await exercise(ex, api, dialect=dialect, keys=keys, prefix=prefix, body_format=body_format)
    assert (tmp_path / "webhooks-seen.db").exists(), "the Python examples dedupe in SQLite"


@pytest.mark.parametrize(
    ("dialect", "prefix"),
    [
        ("standard", "Croupier"),
        ("hmac-hex", "Example"),
        ("ed25519", "Croupier"),
        ("bearer", "Croupier"),
    ],
)
async def test_the_node_example_accepts_deliveries_reports_a_repeat_and_refuses_a_forgery(
    croupier: Serve, api: httpx.AsyncClient, tmp_path: Path, dialect: str, prefix: str
) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed to test examples/node_receiver.js"
    keys = keys_for(dialect)
    command = [node, str(EXAMPLES / "node_receiver.js")]
    with running(command, tmp_path, secret=keys.verifying, dialect=dialect, prefix=prefix) as ex:
        await exercise(ex, api, dialect=dialect, keys=keys, prefix=prefix)
