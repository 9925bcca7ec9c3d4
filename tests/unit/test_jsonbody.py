"""The depth-limited JSON parser every request body goes through."""

from __future__ import annotations

from typing import Any

import pytest

from bridge import jsonbody


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        pytest.param(b"[[1]]", 2, [[1]], id="at-the-limit"),
        pytest.param(b'{"a": {"b": []}}', 3, {"a": {"b": []}}, id="objects-at-the-limit"),
        pytest.param(b'["[[[[[[", "]]]]"]', 1, ["[[[[[[", "]]]]"], id="brackets-in-strings"),
        pytest.param(b'["\\"[[[[["]', 1, ['"[[[[['], id="escaped-quote-then-brackets"),
        pytest.param(b'"[[[[[[[["', 1, "[[[[[[[[", id="a-string-of-brackets"),
        pytest.param(b"[[], [], [], [], []]", 2, [[]] * 5, id="wide-not-deep"),
    ],
)
def test_bodies_within_the_limit_are_decoded(raw: bytes, limit: int, expected: Any) -> None:
    assert jsonbody.loads(raw, max_depth=limit) == expected


@pytest.mark.parametrize(
    ("raw", "limit"),
    [
        pytest.param(b"[[[1]]]", 2, id="one-level-more"),
        pytest.param(b'[{"a": [1]}]', 2, id="mixed-one-level-more"),
        pytest.param(b"[" * 1500 + b"]" * 1500, 64, id="beyond-orjsons-own-limit"),
        pytest.param(b"[" * 200_000, 64, id="unclosed"),
    ],
)
def test_deeper_bodies_are_refused_saying_so(raw: bytes, limit: int) -> None:
    with pytest.raises(jsonbody.JsonBodyError) as refused:
        jsonbody.loads(raw, max_depth=limit)

    assert refused.value.message == (
        f"request body nests deeper than {limit} levels (server.max_json_depth)"
    )


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,]", b"NaN", b"\xff"])
def test_what_is_not_json_is_refused_as_such(raw: bytes) -> None:
    with pytest.raises(jsonbody.JsonBodyError) as refused:
        jsonbody.loads(raw, max_depth=64)

    assert refused.value.message == "request body is not valid JSON"
