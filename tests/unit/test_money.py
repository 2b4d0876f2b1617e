"""Money: exact parsing in every spelling, formatting, and the ISO 4217 exponents."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from croupier.domain.errors import AmountPrecision, InvalidAmount, ValidationFailed
from croupier.domain.money import (
    ISO_4217,
    MAX_MINOR_UNITS,
    Currency,
    check_currency_code,
    check_minor,
    format_minor,
    parse_amount,
)

EUR = Currency("EUR", 2)
JPY = Currency("JPY", 0)
USDT = Currency("USDT", 6)


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        ("2.00", EUR, 200),
        ("2", EUR, 200),
        ("0.1", EUR, 10),
        (Decimal("14.60"), EUR, 1460),
        (Decimal("1E+2"), EUR, 10000),
        (7, EUR, 700),
        ("500", JPY, 500),
        ("1.123456", USDT, 1123456),
        (" 3.50 ", EUR, 350),
        ("-2.00", EUR, -200),
    ],
)
def test_an_amount_is_read_exactly(value: object, currency: Currency, minor: int) -> None:
    assert parse_amount(value, currency) == minor


@pytest.mark.parametrize(
    ("value", "currency"),
    [("2.001", EUR), (Decimal("0.005"), EUR), ("1.5", JPY), ("0.0000001", USDT)],
)
def test_more_decimals_than_the_currency_allows_are_refused(
    value: object, currency: Currency
) -> None:
    with pytest.raises(AmountPrecision, match=f"{currency.code} allows"):
        parse_amount(value, currency)


@pytest.mark.parametrize(
    "value", ["2,00", "1e2", "", "two", "2.", ".5", "NaN", 2.0, True, None, [], Decimal("NaN")]
)
def test_anything_but_a_plain_decimal_is_refused(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(value, EUR)


def test_amounts_past_two_to_the_fifty_three_are_refused() -> None:
    assert check_minor(MAX_MINOR_UNITS) == MAX_MINOR_UNITS
    with pytest.raises(InvalidAmount, match="largest amount"):
        check_minor(MAX_MINOR_UNITS + 1)
    with pytest.raises(InvalidAmount):
        parse_amount("90071992547409.92", EUR)
    with pytest.raises(InvalidAmount):
        check_minor(2.0)


@pytest.mark.parametrize(
    ("minor", "exponent", "text"),
    [(1460, 2, "14.60"), (5, 2, "0.05"), (-5, 2, "-0.05"), (7, 0, "7"), (1, 6, "0.000001")],
)
def test_minor_units_are_written_with_the_currencys_decimals(
    minor: int, exponent: int, text: str
) -> None:
    assert format_minor(minor, exponent) == text


@given(
    minor=st.integers(min_value=-MAX_MINOR_UNITS, max_value=MAX_MINOR_UNITS),
    exponent=st.integers(min_value=0, max_value=12),
)
def test_writing_then_reading_an_amount_gives_it_back(minor: int, exponent: int) -> None:
    currency = Currency("TOK", exponent)
    assert parse_amount(format_minor(minor, exponent), currency) == minor
    assert parse_amount(Decimal(format_minor(minor, exponent)), currency) == minor


def test_the_iso_table_knows_the_exponents_that_differ_from_two() -> None:
    assert (ISO_4217["EUR"], ISO_4217["JPY"], ISO_4217["KWD"], ISO_4217["CLF"]) == (2, 0, 3, 4)
    assert len(ISO_4217) > 150
    assert all(len(code) == 3 and code.isupper() for code in ISO_4217)


@pytest.mark.parametrize("code", ["eur", "EU", "EURO12", "E1R", 3, None])
def test_a_currency_code_is_three_to_five_capital_letters(code: object) -> None:
    with pytest.raises(ValidationFailed):
        check_currency_code(code)
    assert check_currency_code("USDT") == "USDT"
