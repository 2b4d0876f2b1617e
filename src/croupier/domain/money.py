"""Money: an ``int`` of minor units and a currency code, never a float.

A currency's exponent says how many minor units make one major unit (EUR 2: cents; JPY 0;
KWD 3). The ISO 4217 currencies are known out of the box; a tenant registers others (a
stablecoin such as USDT with 6 decimals) before opening accounts in them.

Amounts arrive as decimal strings (``"2.00"``), as JSON numbers parsed straight into
:class:`~decimal.Decimal` from their text, or as integer minor units; whatever the
spelling, an amount that is not exact in its currency's minor unit is refused, never
rounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from croupier.domain.errors import AmountPrecision, InvalidAmount, ValidationFailed

#: The largest amount croupier holds, in minor units: 2^53 - 1, so that every amount and
#: balance it answers is exact in JSON readers that keep numbers as doubles (JavaScript).
MAX_MINOR_UNITS = 2**53 - 1

#: The event catalog's money pattern: ISO 4217 codes and tickers such as USDT.
_CODE = re.compile(r"^[A-Z]{3,5}$")
_DECIMAL_TEXT = re.compile(r"^-?[0-9]+(?:\.[0-9]+)?$")
#: Exponents a registered currency may take (ISO's largest is 4; tokens use up to 18,
#: but minor units past 12 decimals would overflow MAX_MINOR_UNITS at small amounts).
MAX_EXPONENT = 12


@dataclass(frozen=True)
class Currency:
    code: str
    exponent: int


@dataclass(frozen=True)
class Money:
    """An amount in minor units of ``currency``; rendered with the currency's exponent."""

    minor_units: int
    currency: str

    def major(self, exponent: int) -> str:
        """The amount as a decimal string with exactly ``exponent`` decimals: ``"2.00"``."""
        return format_minor(self.minor_units, exponent)


def iso_currency(code: str) -> Currency | None:
    """The ISO 4217 currency called ``code``, or None."""
    exponent = ISO_4217.get(code)
    return None if exponent is None else Currency(code, exponent)


def check_currency_code(code: Any, *, field: str = "currency") -> str:
    """``code`` if it can name a currency: 3-5 capital letters."""
    if not isinstance(code, str) or not _CODE.match(code):
        raise ValidationFailed(
            "a currency code is 3-5 capital letters (ISO 4217, e.g. EUR, or a registered "
            "one such as USDT)",
            field=field,
        )
    return code


def format_minor(minor_units: int, exponent: int) -> str:
    """``1460, 2`` -> ``"14.60"``; ``-5, 2`` -> ``"-0.05"``; ``7, 0`` -> ``"7"``."""
    if exponent == 0:
        return str(minor_units)
    sign = "-" if minor_units < 0 else ""
    digits = str(abs(minor_units)).rjust(exponent + 1, "0")
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"


def major_decimal(minor_units: int, exponent: int) -> Decimal:
    """The amount in major units, exactly (for event payloads that carry major units)."""
    return Decimal(format_minor(minor_units, exponent))


def parse_amount(value: Any, currency: Currency, *, field: str = "amount") -> int:
    """Minor units from a major-unit amount: a decimal string, or a JSON number that was
    parsed into a ``Decimal`` (or an ``int``) from its text. Exact, or refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise InvalidAmount(
            f'{field} must be a decimal string such as "2.00" or an exact JSON number',
            field=field,
        )
    if isinstance(value, str):
        if not _DECIMAL_TEXT.match(value.strip()):
            raise InvalidAmount(
                f'{field} must be a plain decimal such as "2.00", not {value[:40]!r}',
                field=field,
            )
        value = Decimal(value.strip())
    try:
        exact = Decimal(value).scaleb(currency.exponent)
        if not exact.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise InvalidAmount(f"{field} is not a number", field=field) from None
    if exact != exact.to_integral_value():
        raise AmountPrecision(
            f"{field} has more decimals than {currency.code} allows ({currency.exponent})",
            field=field,
        )
    return check_minor(int(exact), field=field)


def check_minor(minor_units: Any, *, field: str = "amount") -> int:
    """``minor_units`` if it is an integer croupier can hold (sign not checked here)."""
    if isinstance(minor_units, bool) or not isinstance(minor_units, int):
        raise InvalidAmount(f"{field} must be an integer number of minor units", field=field)
    if abs(minor_units) > MAX_MINOR_UNITS:
        raise InvalidAmount(
            f"{field} is beyond the largest amount croupier holds ({MAX_MINOR_UNITS} minor units)",
            field=field,
        )
    return minor_units


#: Active ISO 4217 currencies and their minor-unit exponents (funds and precious metals
#: without a minor unit are left out).
# fmt: off
ISO_4217: dict[str, int] = {
    **dict.fromkeys(
        (
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
        "VND", "VUV", "XAF", "XOF", "XPF",
        ),
        0,
    ),
    **dict.fromkeys(
        (
        "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND",
        ),
        3,
    ),
    **dict.fromkeys(
        (
        "CLF", "UYW",
        ),
        4,
    ),
    **dict.fromkeys(
        (
        "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
        "BGN", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
        "CDF", "CHE", "CHF", "CHW", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DKK",
        "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP",
        "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD",
        "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD",
        "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV",
        "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP",
        "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
        "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT",
        "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "USN", "UYU", "UZS", "VED", "VES",
        "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG",
        ),
        2,
    ),
}
# fmt: on
