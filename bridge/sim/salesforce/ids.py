"""Salesforce record ids: the 18-character checksummed form and fresh ids."""

from __future__ import annotations

import re

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_SCRAMBLE = 1_000_000_007  # a prime: n -> n*p mod 62**10 is a bijection, ids look varied
_ID15 = re.compile(r"[a-zA-Z0-9]{15}")


def with_checksum(id15: str) -> str:
    """The 18-character, case-insensitive form of a 15-character Salesforce id."""
    suffix = ""
    for start in (0, 5, 10):
        chunk = id15[start : start + 5]
        suffix += _ID_ALPHABET[sum(1 << i for i, c in enumerate(chunk) if "A" <= c <= "Z")]
    return id15 + suffix


def normalize_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or ``None`` if malformed."""
    if len(value) == 15 and _ID15.fullmatch(value):
        return with_checksum(value)
    if len(value) == 18 and _ID15.fullmatch(value[:15]):
        full = with_checksum(value[:15])
        return full if full[15:] == value[15:].upper() else None
    return None


def base62(number: int, width: int) -> str:
    """``number`` as ``width`` base-62 digits (the serial part of a new id)."""
    digits = ""
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits = _BASE62[digit] + digits
    return digits
