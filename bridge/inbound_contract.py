"""The inbound half of the connector contract: hook requests, their refusals, and lookups.

A connector that takes events from its CRM verifies and parses a :class:`HookRequest`,
refuses one with a :class:`HookError`, and turns what a record lookup found
(:data:`Lookup`) into the :class:`~bridge.model.Inbound` events the ledger keeps, with
:func:`inbound_of`, :func:`linkedin_match` and :func:`name_match`.
:mod:`bridge.connector` names all of these too.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from bridge import errors, jsonbody, linkedin, model

# What a record lookup found: the tasks to accept, why there are none, or (a record without
# a Lance id) the person search that finds its Lance id first.
Lookup = tuple[model.Task, ...] | str | model.Match
# A Lance id found for a CRM record: (objectType, objectId, Lance id) to write to the record.
IdWrite = tuple[str, str, str]


def inbound_of(key: str, found: Lookup, record: tuple[str, str] = ("", "")) -> model.Inbound:
    """The inbound event a record's answer makes: its tasks, its person search, or a skip."""
    if isinstance(found, str):
        return model.Inbound(key, skipped=found, record=record)
    if isinstance(found, model.Match):
        return model.Inbound(key, match=found, record=record)
    return model.Inbound(key, tasks=found, record=record)


def linkedin_match(
    value: Any, where: str, fields: Sequence[str], record: model.Target, *, write_back: bool
) -> model.Match | None:
    """The person search a record's LinkedIn value asks for, or ``None`` without a value.

    Args:
        value: The record's LinkedIn property as the CRM sent it.
        where: Names the property in the reason kept for a value that is not a profile URL.
        fields: The fields to enrich once the person is found.
        record: The record itself, the target of the results (and of the write-back).
        write_back: Whether the Lance id found is written to the record.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    targets, kept = (record,), tuple(fields)
    try:
        key = linkedin.match_key(value)
    except linkedin.NotAProfileUrl as exc:
        return model.Match("", kept, targets, write_back, problem=f"{where}: {exc.reason}")
    return model.Match(key, kept, targets, write_back)


def name_match(
    full_name: Any, company: Any, fields: Sequence[str], record: model.Target, *, write_back: bool
) -> model.Match | None:
    """The name + company search (``match_by`` opt-in), or ``None`` unless both are given."""
    key = linkedin.name_key(full_name, company)
    return None if key is None else model.Match(key, tuple(fields), (record,), write_back)


@dataclasses.dataclass(frozen=True, slots=True)
class HookRequest:
    """An inbound request to ``/hooks/...``, as a connector verifies and parses it.

    Attributes:
        method: The HTTP method.
        url: The URL the sender called: ``server.public_url`` + the raw path and query when
            set (behind a proxy), else the scheme, Host and raw path the bridge saw.
        headers: The request headers (case-insensitive).
        body: The exact bytes received; signatures are checked against these.
        now: The bridge clock, in Unix seconds.
        max_json_depth: How deeply a JSON body may nest (``server.max_json_depth``).
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    now: float
    max_json_depth: int = jsonbody.DEFAULT_MAX_DEPTH

    def json(self) -> Any:
        """The body decoded as JSON, through the bridge's depth-limited parser.

        Raises:
            HookError: 400 ``invalid_json``: not JSON, or nested deeper than allowed.
        """
        try:
            return jsonbody.loads(self.body, max_depth=self.max_json_depth)
        except jsonbody.JsonBodyError as exc:
            raise HookError(400, "invalid_json", exc.message) from None


def wire_bytes(text: str) -> bytes:
    """A header value (or a URL made of the Host header and path) as the bytes received.

    aiohttp decodes those bytes as UTF-8 with ``surrogateescape``, so bytes that are not text
    (a lone 0xff, say) arrive as lone surrogates, which a plain ``str.encode()`` refuses.
    Encoding them back the same way gives exactly the bytes sent, which then compare or sign
    like any others, and simply do not match.
    """
    return text.encode("utf-8", "surrogateescape")


def same_secret(presented: str, expected: str) -> bool:
    """Whether a credential taken from a request header is ``expected``, in constant time."""
    return hmac.compare_digest(wire_bytes(presented), expected.encode())


class HookError(errors.BridgeError):
    """An inbound request refused: ``status`` and a stable ``code`` for the answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
