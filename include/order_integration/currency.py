"""ISO 4217 currency codes and their minor units (the number of decimals money is written with)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP "
    "GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP "
    "LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR "
    "NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN "
    "SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR "
    "ZMW ZWG"
)

MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_TWO.split(), 2),
    **dict.fromkeys(_ZERO.split(), 0),
    **dict.fromkeys(_THREE.split(), 3),
    **dict.fromkeys(_FOUR.split(), 4),
}


#: The smallest unit of each code as a Decimal exponent (``Decimal("0.01")``), made once.
_QUANTUM: dict[str, Decimal] = {code: Decimal(1).scaleb(-units) for code, units in MINOR_UNITS.items()}


def is_valid_currency(code: object) -> bool:
    """True for an active ISO 4217 alphabetic code (upper case, as platforms send it)."""
    return isinstance(code, str) and code in MINOR_UNITS


def minor_units(code: str) -> int:
    """Decimals of ``code``; raises ``KeyError`` for a code that is not ISO 4217."""
    return MINOR_UNITS[code]


def quantize(amount: Decimal, code: str) -> Decimal:
    """``amount`` rounded half-up to the currency's minor units."""
    return amount.quantize(_QUANTUM[code], rounding=ROUND_HALF_UP)


def format_money(amount: Decimal, code: str) -> str:
    """Exact decimal string with the currency's minor units: ``12.30``, JPY ``1200``, KWD ``12.300``."""
    return f"{quantize(amount, code):f}"


def money_formatter(code: str) -> Callable[[Decimal], str]:
    """:func:`format_money` for one currency, its quantum looked up once (an order's amounts)."""
    quantum = _QUANTUM[code]
    return lambda amount: f"{amount.quantize(quantum, rounding=ROUND_HALF_UP):f}"


def to_minor(amount: Decimal, code: str) -> int:
    """``amount`` in integer minor units (cents), for exact comparisons."""
    return int(quantize(amount, code).scaleb(MINOR_UNITS[code]))


def apportion(total: int, weights: Sequence[Decimal]) -> list[int]:
    """``total`` (integer minor units) split in proportion to ``weights`` (non-negative, not all
    zero), by largest remainder: the parts are integers, add up to ``total`` exactly, and each
    is within one unit of its exact share (ties go to the earlier weight)."""
    whole = sum(weights, Decimal(0))
    if whole <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights must be non-negative and not all zero: {list(weights)}")
    exact = [Decimal(total) * w / whole for w in weights]
    parts = [int(x.to_integral_value(rounding=ROUND_FLOOR)) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (parts[i] - exact[i], i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts
