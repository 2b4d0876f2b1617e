from __future__ import annotations

import pytest

from croupier.domain.endpoints import validate_headers, validate_timeout, validate_url
from croupier.domain.errors import InvalidUrl, ValidationFailed


@pytest.mark.parametrize(
    "url",
    [
        "https://operator.example/webhooks",
        "http://127.0.0.1:9000/hook",
        "https://[2001:db8::1]:8443/x?y=1",
    ],
)
def test_well_formed_http_urls_are_accepted(url: str) -> None:
    assert validate_url(url) == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://operator.example/x", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("https://user:pass@operator.example/", "credentials"),
        ("https://token@operator.example/", "credentials"),
        ("https:///nohost", "no host"),
        ("https://operator.example:99999/", "malformed"),
        ("https://operator.example/#frag", "fragment"),
        ("https://operator.example/a b", "whitespace"),
        ("operator.example/hook", "http or https"),
        ("https://[::1/", "malformed"),
    ],
)
def test_bad_urls_are_refused_with_a_reason(url: str, words: str) -> None:
    with pytest.raises(InvalidUrl, match=words):
        validate_url(url)


def test_croupier_owned_headers_cannot_be_overridden() -> None:
    for name in ("Content-Type", "webhook-signature", "User-Agent", "X-Trace-Id", "traceparent"):
        with pytest.raises(ValidationFailed, match="set by croupier"):
            validate_headers({name: "x"})


def test_header_values_cannot_smuggle_line_breaks() -> None:
    with pytest.raises(ValidationFailed):
        validate_headers({"X-Api-Key": "a\r\nInjected: yes"})


def test_custom_headers_pass_through() -> None:
    assert validate_headers({"X-Api-Key": "k", "X-Brand": "b"}) == {
        "X-Api-Key": "k",
        "X-Brand": "b",
    }


@pytest.mark.parametrize("timeout", [0, 99, 60_001])
def test_timeouts_outside_the_range_are_refused(timeout: int) -> None:
    with pytest.raises(ValidationFailed):
        validate_timeout(timeout)
