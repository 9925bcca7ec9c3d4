"""LinkedIn profile URL normalisation against real-world variants."""

from __future__ import annotations

import pytest

from bridge import linkedin

CANON = "https://www.linkedin.com/in/john-smith"

SAME_PROFILE = [
    "https://www.linkedin.com/in/john-smith",
    "https://www.linkedin.com/in/john-smith/",
    "http://www.linkedin.com/in/john-smith",
    "https://linkedin.com/in/john-smith",
    "www.linkedin.com/in/john-smith",
    "linkedin.com/in/john-smith",
    "//www.linkedin.com/in/john-smith",
    "HTTPS://WWW.LINKEDIN.COM/IN/JOHN-SMITH",
    "https://www.linkedin.com/in/John-Smith",
    "https://uk.linkedin.com/in/john-smith",
    "https://de.linkedin.com/in/john-smith/",
    "https://fr.linkedin.com/in/john-smith",
    "https://m.linkedin.com/in/john-smith",
    "https://www.linkedin.com/mwlite/in/john-smith",
    "https://www.linkedin.com/in/john-smith?trk=public_profile",
    "https://www.linkedin.com/in/john-smith/?originalSubdomain=uk",
    "https://www.linkedin.com/in/john-smith#experience",
    "https://www.linkedin.com/in/john-smith/?utm_source=share&utm_medium=member_ios",
    "https://www.linkedin.com/in/john-smith/en",
    "https://www.linkedin.com/in/john-smith/de-de/",
    "https://www.linkedin.com/in/john-smith/details/experience/",
    "https://www.linkedin.com/in/john-smith/recent-activity/all/",
    "https://www.linkedin.com//in//john-smith//",
    "  https://www.linkedin.com/in/john-smith  ",
    "https://www.linkedin.com./in/john-smith",
    "https://www.linkedin.com/in/john%2Dsmith",
    "https://www.linkedin.com/In/john-smith",
]

VARIANTS = [
    (
        "https://www.linkedin.com/in/j%C3%BCrgen-m%C3%BCller",
        "https://www.linkedin.com/in/jürgen-müller",
    ),
    ("https://www.linkedin.com/in/jürgen-müller/", "https://www.linkedin.com/in/jürgen-müller"),
    ("https://www.linkedin.com/in/J%C3%9CRGEN", "https://www.linkedin.com/in/jürgen"),
    ("https://www.linkedin.com/in/john_smith_42", "https://www.linkedin.com/in/john_smith_42"),
    (
        "https://www.linkedin.com/in/johnsmith-4a5b6c7d",
        "https://www.linkedin.com/in/johnsmith-4a5b6c7d",
    ),
    # The old public form: id segments reversed, the two placed first padded to 3 digits.
    (
        "https://www.linkedin.com/pub/dan-smith/5/a5b/7b1",
        "https://www.linkedin.com/in/dan-smith-7b1a5b5",
    ),
    (
        "http://uk.linkedin.com/pub/jane-doe/12/345/678",
        "https://www.linkedin.com/in/jane-doe-67834512",
    ),
    (
        "https://www.linkedin.com/pub/jane-doe/1a/b/2c/",
        "https://www.linkedin.com/in/jane-doe-02c00b1a",
    ),
    (
        "https://www.linkedin.com/pub/Jane-Doe/1A/2B3/4C5?trk=x",
        "https://www.linkedin.com/in/jane-doe-4c52b31a",
    ),
]

NOT_PROFILES = [
    ("", "empty"),
    ("   ", "empty"),
    ("john smith", "whitespace"),
    ("https://www.linkedin.com/in/john smith", "whitespace"),
    ("mailto:john@example.com", "http(s)"),
    ("javascript:alert(1)", "http(s)"),
    ("ftp://www.linkedin.com/in/john-smith", "http(s)"),
    ("https://www.linkedin.com.evil.example/in/john-smith", "linkedin.com"),
    ("https://evil.example/www.linkedin.com/in/john-smith", "linkedin.com"),
    ("https://notlinkedin.com/in/john-smith", "linkedin.com"),
    ("https://lnkd.in/abc123", "linkedin.com"),
    ("https://www.linkedin.com:8443/in/john-smith", "port"),
    ("https://user@www.linkedin.com/in/john-smith", "port or user"),
    ("https://www.linkedin.com:abc/in/john-smith", "malformed"),
    ("https://www.linkedin.com/", "no /in/"),
    ("https://www.linkedin.com/in/", "no profile name"),
    ("https://www.linkedin.com/company/acme", "/company/"),
    ("https://www.linkedin.com/school/mit/", "/school/"),
    ("https://www.linkedin.com/feed/", "/feed/"),
    ("https://www.linkedin.com/jobs/view/123", "/jobs/"),
    ("https://www.linkedin.com/profile/view?id=12345", "/profile/view"),
    ("https://www.linkedin.com/pub/jane-doe", "/pub/"),
    ("https://www.linkedin.com/pub/jane-doe/12/zz/678", "/pub/"),
    ("https://www.linkedin.com/in/ab", "3-100"),
    ("https://www.linkedin.com/in/" + "a" * 101, "3-100"),
    ("https://www.linkedin.com/in/john%2Fsmith", "characters"),
    ("https://www.linkedin.com/in/john%00smith", "characters"),
    ("https://sub.www.linkedin.com/in/john-smith", "linkedin.com"),
]


@pytest.mark.parametrize("url", SAME_PROFILE)
def test_variants_of_one_profile_normalise_to_one_url(url: str) -> None:
    assert linkedin.normalise(url) == CANON


@pytest.mark.parametrize(("url", "expected"), VARIANTS)
def test_variant_normalises(url: str, expected: str) -> None:
    assert linkedin.normalise(url) == expected


@pytest.mark.parametrize(("url", "reason"), NOT_PROFILES)
def test_junk_gets_a_clear_reason(url: str, reason: str) -> None:
    with pytest.raises(linkedin.NotAProfileUrl) as caught:
        linkedin.normalise(url)
    assert reason in caught.value.reason
    assert str(caught.value).startswith("not a LinkedIn profile URL: ")
    assert not linkedin.is_profile_url(url)


def test_the_reason_never_echoes_the_value() -> None:
    with pytest.raises(linkedin.NotAProfileUrl) as caught:
        linkedin.normalise("https://secret-host.example/in/private-person")
    assert "private-person" not in str(caught.value)
    assert "secret-host" not in str(caught.value)


def test_normalising_is_idempotent() -> None:
    for url in SAME_PROFILE + [v for v, _ in VARIANTS]:
        once = linkedin.normalise(url)
        assert linkedin.normalise(once) == once
