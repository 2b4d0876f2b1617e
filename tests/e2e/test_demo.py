"""``croupier demo``: what a newcomer runs second must work, end to end, every time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
async def test_the_demo_plays_over_rest_and_grpc_and_every_check_passes() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "croupier.cli",
        "demo",
        "--seconds",
        "4",
        "--players",
        "6",
        "--seed",
        "7",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")},
            "COLUMNS": "120",
        },
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    text = " ".join(out.decode(errors="replace").split())
    assert proc.returncode == 0, text
    assert "every invariant holds" in text, text
    assert "events delivered and verified" in text, text
    assert "every balance (6) is what the game server expects" in text, text
    rest, grpc = _calls(text)
    assert rest > 0 and grpc > 0, text


def _calls(text: str) -> tuple[int, int]:
    """The REST and gRPC call counts of the last summary printed."""
    marker = "wallet calls (REST / gRPC)"
    tail = text.rsplit(marker, 1)[1].split()
    rest, grpc = tail[1], tail[3]
    return int(rest.replace(",", "")), int(grpc.replace(",", ""))
