"""What a page of a person search means for a record (pure logic), and the match keys."""

from __future__ import annotations

import uuid

import pytest

from bridge import lance, linkedin, matcher

KEY = "linkedin:https://www.linkedin.com/in/ada-l"
ONE, TWO = str(uuid.uuid4()), str(uuid.uuid4())


def _page(
    *people: dict[str, object], total: int | None = None, skipped: int = 0
) -> lance.PersonPage:
    return lance.PersonPage(list(people), total, skipped)


@pytest.mark.parametrize(
    ("page", "outcome", "entity", "cached", "reason"),
    [
        (_page({"id": ONE}, total=1), "matched", ONE, True, None),
        (_page({"id": ONE.upper()}), "matched", ONE, True, None),
        (
            _page({"id": ONE, "linkedinUrl": "http://uk.linkedin.com/in/Ada-L/"}),
            "matched",
            ONE,
            True,
            None,
        ),
        (
            _page({"id": ONE, "linkedinUrl": "https://www.linkedin.com/in/bob"}),
            "unmatched",
            None,
            True,
            "another LinkedIn URL",
        ),
        (_page(total=0), "unmatched", None, True, "no Lance person found for this LinkedIn URL"),
        (_page({"id": ONE}, {"id": TWO}, total=2), "ambiguous", None, True, "2 Lance people match"),
        (_page({"id": ONE}, total=7), "ambiguous", None, True, "7 Lance people match"),
        (
            _page({"id": ONE}, skipped=1),
            "ambiguous",
            None,
            False,
            "1 candidate(s) without a usable id",
        ),
        (_page(skipped=2), "unmatched", None, False, "2 candidate(s) without a usable id"),
        (_page({"id": "not-a-uuid"}), "unmatched", None, False, "without a usable id"),
        (_page(total=1), "unmatched", None, False, "counted 1 person but sent none"),
    ],
)
def test_only_one_clean_candidate_is_a_match(
    page: lance.PersonPage, outcome: str, entity: str | None, cached: bool, reason: str | None
) -> None:
    found = matcher.outcome_of(KEY, page)

    assert (found.outcome, found.entity_id, found.cached) == (outcome, entity, cached)
    if reason is None:
        assert found.reason is None
    else:
        assert found.reason is not None
        assert reason in found.reason


@pytest.mark.parametrize(
    "url",
    [
        "https://www.linkedin.com/in/ada-l",
        "http://UK.linkedin.com/in/Ada-L/?trk=public_profile",
        "linkedin.com/in/ada-l",
        "//m.linkedin.com/in/ada-l#about",
        "https://de.linkedin.com/in/ada-l/de",
    ],
)
def test_every_written_form_of_a_profile_is_one_key(url: str) -> None:
    assert linkedin.match_key(url) == KEY


def test_a_name_key_folds_case_and_spacing_and_needs_both_parts() -> None:
    assert linkedin.name_key("  Ada   LOVELACE ", "Analytical  Engines") == (
        "name:ada lovelace\tanalytical engines"
    )
    assert linkedin.name_key("Ada Lovelace", " ") is None
    assert linkedin.name_key(None, "Acme") is None
