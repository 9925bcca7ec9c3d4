"""LinkedIn profile URLs in one canonical form, so a CRM's value and Lance's can be compared.

The canonical form is ``https://www.linkedin.com/in/<slug>``: scheme, ``www.``/``m.``/country
subdomains, case, trailing slash, query, fragment, a locale suffix and percent-encoding do not
change which profile a URL names, so none of them survive. Pure functions, no I/O.

The old public form ``/pub/<name>/<a>/<b>/<c>`` still redirects on LinkedIn to
``/in/<name>-<c><b><a>``: the three id segments in reverse order. We assume (from the redirects
seen in the wild) that the two segments placed first are three hex digits each, padded with
leading zeros when shorter, and the last one keeps its length.
"""

from __future__ import annotations

import re
import urllib.parse

CANONICAL_PREFIX = "https://www.linkedin.com/in/"
# The two kinds of match key (DESIGN §12): a canonical profile URL, or a name at a company.
MATCH_PREFIX = "linkedin:"
NAME_PREFIX = "name:"
# linkedin.com itself, www., the mobile m. and the two-letter country subdomains (uk., de. ...).
_HOST = re.compile(r"(?:(?:www|m|[a-z]{2})\.)?linkedin\.com")
_PUB_SEGMENT = re.compile(r"[0-9a-f]{1,3}")
_SLUG_MAX = 100
_SLUG_MIN = 3


class NotAProfileUrl(ValueError):
    """``value`` is not a LinkedIn person profile URL; ``reason`` says why (no URL echoed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not a LinkedIn profile URL: {reason}")
        self.reason = reason


def normalise(value: str) -> str:
    """The canonical ``https://www.linkedin.com/in/<slug>`` form of a profile URL.

    Raises:
        NotAProfileUrl: ``value`` does not name a LinkedIn person profile.
    """
    text = value.strip()
    if not text:
        raise NotAProfileUrl("empty")
    if any(ch.isspace() for ch in text):
        raise NotAProfileUrl("contains whitespace")
    parts = _split(text)
    host = (parts.hostname or "").rstrip(".")
    if parts.port is not None or parts.username is not None:
        raise NotAProfileUrl("unexpected port or user name")
    if not _HOST.fullmatch(host):
        raise NotAProfileUrl("not a linkedin.com address")
    return CANONICAL_PREFIX + _slug(parts.path)


def match_key(value: str) -> str:
    """The match table's key of a profile URL: ``linkedin:`` and its canonical form.

    Raises:
        NotAProfileUrl: ``value`` does not name a LinkedIn person profile.
    """
    return MATCH_PREFIX + normalise(value)


def name_key(full_name: object, company: object) -> str | None:
    """The match table's key of a full name at a company (case and spacing folded), or
    ``None`` unless both are non-blank strings."""
    if not isinstance(full_name, str) or not isinstance(company, str):
        return None
    name, firm = " ".join(full_name.split()), " ".join(company.split())
    if not name or not firm:
        return None
    return f"{NAME_PREFIX}{name.casefold()}\t{firm.casefold()}"


def is_profile_url(value: str) -> bool:
    """Whether :func:`normalise` accepts ``value``."""
    try:
        normalise(value)
    except NotAProfileUrl:
        return False
    return True


def _split(text: str) -> urllib.parse.SplitResult:
    # A scheme-less value ("linkedin.com/in/x", "//www.linkedin.com/in/x") is common in CRMs.
    lowered = text.lower()
    if lowered.startswith("//"):
        text = "https:" + text
    elif "://" not in lowered:
        if ":" in lowered.split("/", 1)[0]:
            raise NotAProfileUrl("not an http(s) address")
        text = "https://" + text
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise NotAProfileUrl("malformed address") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise NotAProfileUrl("not an http(s) address")
    return parts


def _slug(path: str) -> str:
    segments = [urllib.parse.unquote(s) for s in path.split("/") if s]
    if segments[:1] == ["mwlite"]:  # LinkedIn Lite's mobile pages: /mwlite/in/<slug>
        segments = segments[1:]
    kind = segments[0].lower() if segments else ""
    if kind == "in":
        slug = _in_slug(segments[1:])
    elif kind == "pub":
        slug = _pub_slug(segments[1:])
    elif kind in ("company", "school", "showcase", "groups", "jobs", "feed", "posts"):
        raise NotAProfileUrl(f"a /{kind}/ page, not a person profile")
    elif kind == "profile":
        raise NotAProfileUrl("a /profile/view link has no public profile name")
    else:
        raise NotAProfileUrl("no /in/ or /pub/ profile path")
    return _checked(slug.lower())


def _in_slug(rest: list[str]) -> str:
    if not rest:
        raise NotAProfileUrl("no profile name after /in/")
    # Anything after the name (a locale, /details/experience, /recent-activity) is the same
    # profile.
    return rest[0]


def _pub_slug(rest: list[str]) -> str:
    if len(rest) != 4 or not all(_PUB_SEGMENT.fullmatch(s.lower()) for s in rest[1:]):
        raise NotAProfileUrl("an old /pub/ path needs /pub/<name>/<a>/<b>/<c> (hex)")
    name, first, second, third = rest
    return f"{name}-{third.zfill(3)}{second.zfill(3)}{first}"


def _checked(slug: str) -> str:
    if not _SLUG_MIN <= len(slug) <= _SLUG_MAX:
        raise NotAProfileUrl(f"profile name must be {_SLUG_MIN}-{_SLUG_MAX} characters")
    if any(ch in slug for ch in "/?#@ ") or not slug.isprintable():
        raise NotAProfileUrl("profile name has characters LinkedIn does not use")
    return slug
