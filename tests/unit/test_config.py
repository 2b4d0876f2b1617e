"""Settings: how many sender processes ``serve`` runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from croupier.config import AUTO_SENDERS_MAX, MAX_SENDERS, Settings


@pytest.mark.parametrize(
    ("cores", "expected"), [(None, 0), (1, 0), (2, 1), (3, 1), (4, 2), (8, 4), (64, 4)]
)
def test_auto_runs_one_sender_per_two_cores_up_to_four_and_none_on_one_core(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, expected: int
) -> None:
    monkeypatch.setattr("croupier.config.os.cpu_count", lambda: cores)
    assert Settings(senders="auto").sender_processes() == expected
    assert Settings(senders=-1).sender_processes() == expected
    assert AUTO_SENDERS_MAX == 4


def test_an_explicit_count_wins_over_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("croupier.config.os.cpu_count", lambda: 2)
    assert Settings(senders=0).sender_processes() == 0
    assert Settings(senders=3).sender_processes() == 3


@pytest.mark.parametrize("bad", [-2, MAX_SENDERS + 1, "many"])
def test_a_sender_count_out_of_range_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        Settings(senders=bad)


def test_the_environment_sets_the_sender_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROUPIER_SENDERS", "AUTO")
    monkeypatch.setattr("croupier.config.os.cpu_count", lambda: 8)
    assert Settings().sender_processes() == 4
    monkeypatch.setenv("CROUPIER_SENDERS", "2")
    assert Settings().sender_processes() == 2
