"""Decide whether a child needs a write: is the desired object already true of the live one?

The live object carries server defaults and other managers' fields, so equality is the
wrong test; "every field we set has the value we want" is the right one. Quantities are
compared by value ("1000m" == "1"), and an empty list or map we render matches an absent
field (the server drops them).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

_SUFFIX = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}
_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")


def parse_quantity(value: str) -> Decimal | None:
    m = _QUANTITY.match(value)
    if not m:
        return None
    return Decimal(m.group(1)) * Decimal(_SUFFIX[m.group(2) or ""])


def _scalar_equal(want: Any, have: Any) -> bool:
    if want == have:
        return True
    if isinstance(want, str) and isinstance(have, str | int):
        a, b = parse_quantity(want), parse_quantity(str(have))
        return a is not None and a == b
    return False


def is_subset(want: Any, have: Any) -> bool:
    """True when everything in `want` is present with the same value in `have`."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return not want and have is None
        for key, value in want.items():
            if key not in have or have[key] is None:
                if value in ({}, [], None):
                    continue
                return False
            if not is_subset(value, have[key]):
                return False
        return True
    if isinstance(want, list):
        if have is None:
            return not want
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(is_subset(w, h) for w, h in zip(want, have, strict=True))
    return _scalar_equal(want, have)


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    if live is None:
        return True
    return not is_subset({k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}, live)
