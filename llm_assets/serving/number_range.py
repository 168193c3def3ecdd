"""A JSON number or integer bounded by minimum / maximum (and their exclusive forms) as a GBNF expression.

llama-cpp-python's schema converter ignores bounds on numbers, so a model could answer 1.7 to a schema that says
at most 1. Here the bounds are decided digit by digit: an integral part strictly inside the range takes any
fraction; at a bound's integral part, the fraction is compared with the bound's decimals one digit at a time. The
answers are plain decimals (no exponent), written the way JSON writes them (no leading zeros); every one of them
is in the range, and every plain decimal in the range is one of them, up to a length: like the converter's own
number rule, runs of free digits are bounded (FREE digits), so a barely trained model cannot write digits until
max_tokens. Stdlib only: grammar workers import it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Optional

FREE = 16  # the most digits of one free run (the converter's number rule allows 16 integral and 16 decimal digits)
_ANY_DIGITS = f"[0-9]{{1,{FREE}}}"
_TAIL = f"[0-9]{{0,{FREE - 1}}}"
_NONZERO = f"[0-9]{{0,{FREE // 2 - 1}}} [1-9] [0-9]{{0,{FREE // 2}}}"  # digits, not all of them 0

# A continuation: (GBNF for the digit strings of at least one digit that satisfy a comparison, or None for none;
# whether the empty string satisfies it too).
Cont = tuple[Optional[str], bool]
NOTHING: Cont = (None, False)


class EmptyRange(ValueError):
    """No number satisfies the bounds."""


def number_range(low: Optional[Decimal], high: Optional[Decimal], low_exclusive: bool = False,
                 high_exclusive: bool = False) -> str:
    """GBNF for the plain decimals x with low <= x <= high (< where exclusive; None: unbounded on that side)."""
    if low is not None and high is not None and (low > high or (low == high and (low_exclusive or high_exclusive))):
        raise EmptyRange(f"no number is {'>' if low_exclusive else '>='} {low} and "
                         f"{'<' if high_exclusive else '<='} {high}")
    alternatives = []
    if high is None or (high >= 0 and not (high == 0 and high_exclusive)):  # x >= 0
        start, start_exclusive = (Decimal(0), False) if low is None or low < 0 else (low, low_exclusive)
        alternatives.append(_magnitudes(start, start_exclusive, high, high_exclusive))
    if low is None or low < 0:  # x < 0: "-" and a magnitude; -0 is 0, in range wherever 0 is
        if high is not None and high < 0:
            negative = _magnitudes(-high, high_exclusive, None if low is None else -low, low_exclusive)
        else:
            negative = _magnitudes(Decimal(0), True, None if low is None else -low, low_exclusive)
        alternatives.append(f'"-" ({negative})')
    return _alt(a for a in alternatives if a)


def integer_range(low: Optional[int], high: Optional[int]) -> str:
    """GBNF for the integers low..high (inclusive; None: unbounded on that side), as JSON writes them."""
    if low is not None and high is not None and low > high:
        raise EmptyRange(f"no integer is >= {low} and <= {high}")
    alternatives = []
    if high is None or high >= 0:
        first = 0 if low is None or low < 0 else low
        alternatives.append(_integers_from(first) if high is None else _integers(first, high))
    if low is None or low < 0:
        first = 1 if high is None or high >= 0 else -high
        alternatives.append(f'"-" ({_integers_from(first) if low is None else _integers(first, -low)})')
    return _alt(alternatives)


def _magnitudes(low: Decimal, low_exclusive: bool, high: Optional[Decimal], high_exclusive: bool) -> Optional[str]:
    """Non-negative plain decimals between low (>= 0) and high."""
    low_int, low_frac = _split(low)
    pieces = []
    if high is None:
        pieces.append(_piece(low_int, low_int, _at_least(low_frac, low_exclusive)))
        pieces.append(f"({_integers_from(low_int + 1)}) {_fraction((_ANY_DIGITS, True))}")
        return _alt(p for p in pieces if p)
    high_int, high_frac = _split(high)
    if low_int == high_int:
        return _piece(low_int, low_int, _between(low_frac, high_frac, low_exclusive, high_exclusive))
    pieces.append(_piece(low_int, low_int, _at_least(low_frac, low_exclusive)))
    if low_int + 1 <= high_int - 1:
        pieces.append(_piece(low_int + 1, high_int - 1, (_ANY_DIGITS, True)))
    pieces.append(_piece(high_int, high_int, _at_most(high_frac, high_exclusive)))
    return _alt(p for p in pieces if p)


def _split(value: Decimal) -> tuple[int, str]:
    """(integral part, the decimals as a digit string without trailing zeros) of a non-negative decimal."""
    integral = int(value)
    decimals = format(value - integral, "f").partition(".")[2].rstrip("0")
    return integral, decimals


def _piece(first: int, last: int, cont: Cont) -> Optional[str]:
    fraction = _fraction(cont)
    return None if fraction is None else f"({_integers(first, last)}) {fraction}".strip()


def _fraction(cont: Cont) -> Optional[str]:
    """The fraction part after an integral part: nothing (the value's decimals are 0), or "." and digits."""
    digits, empty_ok = cont
    if digits is None:
        return "" if empty_ok else None
    return f'("." ({digits}))?' if empty_ok else f'"." ({digits})'



def _then(digit: str, rest: Cont) -> Optional[str]:
    """The digit, then a continuation (which may be empty)."""
    digits, empty_ok = rest
    if digits is None:
        return f'"{digit}"' if empty_ok else None
    return f'"{digit}" ({digits})' + ("?" if empty_ok else "")


def _at_least(bound: str, exclusive: bool) -> Cont:
    """Digit strings s with 0.s >= 0.bound (> where exclusive)."""
    if not bound.strip("0"):
        return (_NONZERO, False) if exclusive else (_ANY_DIGITS, True)
    d = int(bound[0])
    options = ([f"[{d + 1}-9] {_TAIL}"] if d < 9 else []) + [_then(str(d), _at_least(bound[1:], exclusive))]
    return _alt(options), False


def _at_most(bound: str, exclusive: bool) -> Cont:
    """Digit strings s with 0.s <= 0.bound (< where exclusive)."""
    if not bound.strip("0"):
        return NOTHING if exclusive else (f'"0"{{1,{FREE}}}', True)
    d = int(bound[0])
    options = ([f"[0-{d - 1}] {_TAIL}"] if d > 0 else []) + [_then(str(d), _at_most(bound[1:], exclusive))]
    return _alt(options), True  # nothing more is 0, below a bound that is not 0


def _between(low: str, high: str, low_exclusive: bool, high_exclusive: bool) -> Cont:
    """Digit strings s with 0.low <= 0.s <= 0.high (each < where exclusive)."""
    low, high = low.rstrip("0"), high.rstrip("0")
    if not high:  # 0.high is 0, so 0.low is too
        return _at_most("", high_exclusive or low_exclusive)
    empty_ok = not low and not low_exclusive
    lo, hi = (int(low[0]) if low else 0), int(high[0])
    if lo == hi:
        return _then(str(lo), _between(low[1:], high[1:], low_exclusive, high_exclusive)), empty_ok
    options = [_then(str(lo), _at_least(low[1:], low_exclusive))]
    if hi - lo >= 2:
        options.append(f"[{lo + 1}-{hi - 1}] {_TAIL}")
    options.append(_then(str(hi), _at_most(high[1:], high_exclusive)))
    return _alt(options), empty_ok


def _integers(first: int, last: int) -> str:
    """Integers first..last (0 <= first <= last) as JSON writes them."""
    options = []
    for width in range(len(str(first)), len(str(last)) + 1):
        lo = max(first, 10 ** (width - 1) if width > 1 else 0)
        hi = min(last, 10 ** width - 1)
        options.append(_same_width(str(lo), str(hi)))
    return _alt(options)


def _integers_from(first: int) -> str:
    """Integers >= first (>= 0)."""
    width = len(str(first))
    more = f"[1-9] [0-9]{{{width},{max(width, FREE - 1)}}}"  # one digit longer, or more
    return _alt([_same_width(str(first), "9" * width), more])


def _same_width(low: str, high: str) -> str:
    """Digit strings of one width between low and high."""
    if not low:
        return ""
    if low == high:
        return f'"{low}"'
    if set(low[1:]) <= {"0"} and set(high[1:]) <= {"9"}:
        return f"[{low[0]}-{high[0]}]" + "".join(" [0-9]" for _ in low[1:])
    if low[0] == high[0]:
        return f'"{low[0]}" ({_same_width(low[1:], high[1:])})'
    rest = len(low) - 1
    options = [f'"{low[0]}" ({_same_width(low[1:], "9" * rest)})' if rest else f'"{low[0]}"']
    if int(high[0]) - int(low[0]) >= 2:
        options.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}]" + "".join(" [0-9]" for _ in range(rest)))
    options.append(f'"{high[0]}" ({_same_width("0" * rest, high[1:])})' if rest else f'"{high[0]}"')
    return _alt(options)


def _alt(options) -> Optional[str]:
    options = [o for o in options if o]
    if not options:
        return None
    return options[0] if len(options) == 1 else " | ".join(f"({o})" for o in options)
