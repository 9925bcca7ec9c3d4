"""The simulator's person search (``POST /api/v1/entities/prospects/person``): body validation,
the filters the bridge uses, and the people they can find.

The directory is a fixed, seeded set of people built from :func:`entities.fake_person`. Their
names come from short lists, so a full name usually belongs to several people (namesakes); a
few people share one LinkedIn URL (a profile Lance holds twice), so a URL can match several
people too; any name or URL outside the directory matches nobody.

Filters matched: ``contact.socialMediaLink``, ``contact.fullName`` (SMART/WORD/STRICT) and
``contact.company.current``. The other documented contact keys are accepted when they are
objects and do not narrow the result; an undocumented key is a 400.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import unicodedata
import uuid
from collections.abc import Callable, Mapping, Sequence

from bridge import linkedin
from bridge.sim.lance.entities import fake_company, fake_person
from bridge.sim.lance.errors import invalid

MAX_SIZE = 100
DEFAULT_SIZE = 10
NAME_MODES = frozenset({"SMART", "WORD", "STRICT"})
# What a search is counted under in the stats: each of these filters it uses.
FILTER_KINDS = ("socialMediaLink", "fullName", "company.current")
# Documented contact keys the simulator accepts without matching on them.
_IGNORED_CONTACT_KEYS = frozenset(
    {
        "skill",
        "certification",
        "language",
        "seniority",
        "location",
        "departmentAndFunction",
        "socialMedia",
        "keyword",
        "education",
    }
)
_BODY_KEYS = frozenset({"page", "size", "contact", "account"})
# One person in this many shares the LinkedIn URL of the person before it.
_DUPLICATE_URL_EVERY = 25

Predicate = Callable[["Person"], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class Person:
    """What the filters look at; the answer is built from ``id`` by the store."""

    id: str
    full_name: str
    linkedin_url: str
    company_name: str
    company_domain: str


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """A validated search: the page wanted and the predicates a person must pass."""

    page: int
    size: int
    predicates: tuple[Predicate, ...]
    kinds: tuple[str, ...]


class Directory:
    """The people the search can find, in a stable order (by id)."""

    def __init__(self, count: int, seed: int | None) -> None:
        rng = random.Random(f"people:{seed}")  # noqa: S311 - fake data, not security
        ids = sorted(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count))
        self.url_overrides: dict[str, str] = {}
        people: list[Person] = []
        for index, person_id in enumerate(ids):
            person = _person(person_id)
            if index and index % _DUPLICATE_URL_EVERY == 0:
                twin = people[-1].linkedin_url
                self.url_overrides[person_id] = twin
                person = dataclasses.replace(person, linkedin_url=twin)
            people.append(person)
        self.people: tuple[Person, ...] = tuple(people)

    def search(self, query: Query) -> tuple[list[str], int]:
        """The ids on the page asked for, and how many people match in all."""
        hits = [p.id for p in self.people if all(test(p) for test in query.predicates)]
        start = query.page * query.size
        return hits[start : start + query.size], len(hits)


def _person(person_id: str) -> Person:
    data = fake_person(person_id, emails=False, phones=False)
    company = fake_company(str(data["companyId"]), summary=False)
    return Person(
        id=person_id,
        full_name=f"{data['firstName']} {data['lastName']}",
        linkedin_url=str(data["linkedinUrl"]),
        company_name=str(company["name"]),
        company_domain=str(company["domain"]),
    )


def spring_page(content: Sequence[object], total: int, page: int, size: int) -> dict[str, object]:
    """A Spring ``Page`` answer (Spring reports one page when ``size`` is 0)."""
    pages = 1 if size == 0 else math.ceil(total / size)
    return {
        "content": list(content),
        "totalElements": total,
        "totalPages": pages,
        "number": page,
        "size": size,
        "first": page == 0,
        "last": page >= pages - 1,
        "numberOfElements": len(content),
        "empty": not content,
    }


def parse(body: object) -> Query:
    """Validate a search body; 400 ``VALIDATION_ERROR`` naming the first bad field."""
    if not isinstance(body, dict):
        raise invalid("body", "body must be a JSON object")
    for key in body:
        if key not in _BODY_KEYS:
            raise invalid(key, f"{key} is not a known search parameter")
    page = _integer(body.get("page", 0), "page", 0, None)
    size = _integer(body.get("size", DEFAULT_SIZE), "size", 0, MAX_SIZE)
    if "account" in body and not isinstance(body["account"], dict):
        raise invalid("account", "account must be a JSON object")
    contact = body.get("contact", {})
    if not isinstance(contact, dict):
        raise invalid("contact", "contact must be a JSON object")
    predicates: list[Predicate] = []
    kinds: list[str] = []
    for key, value in contact.items():
        path = f"contact.{key}"
        if key == "socialMediaLink":
            predicates += _groups(value, path, _list_condition(_url_matches))
        elif key == "fullName":
            predicates += _groups(value, path, _name_condition)
        elif key == "company":
            predicates += _company(value, path)
        elif key in _IGNORED_CONTACT_KEYS:
            _object(value, path)
            continue
        else:
            raise invalid(path, f"{path} is not a known contact filter")
        if key != "company" or "current" in _object(value, path):
            kinds.append("company.current" if key == "company" else key)
    return Query(page, size, tuple(predicates), tuple(kinds))


def _integer(value: object, path: str, low: int, high: int | None) -> int:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and low <= value and (high is None or value <= high):  # type: ignore[operator]
        return value  # type: ignore[return-value]
    if high is None:
        raise invalid(path, f"{path} must be an integer of at least {low}")
    raise invalid(path, f"{path} must be an integer between {low} and {high}")


def _object(value: object, path: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise invalid(path, f"{path} must be a JSON object")
    return value


Condition = Callable[[object, str, bool], Predicate]


def _groups(value: object, path: str, condition: Condition) -> list[Predicate]:
    """``{all|any: {include, exclude}}``: every predicate the groups ask for."""
    groups = _object(value, path)
    if not groups:
        raise invalid(path, f"{path} needs 'all' or 'any'")
    predicates: list[Predicate] = []
    for quantifier, group in groups.items():
        here = f"{path}.{quantifier}"
        if quantifier not in ("all", "any"):
            raise invalid(here, f"{here} is not 'all' or 'any'")
        parts = _object(group, here)
        for name, spec in parts.items():
            if name not in ("include", "exclude"):
                raise invalid(f"{here}.{name}", f"{here}.{name} is not 'include' or 'exclude'")
            test = condition(spec, f"{here}.{name}", quantifier == "all")
            predicates.append(test if name == "include" else _negated(test))
    return predicates


def _negated(test: Predicate) -> Predicate:
    # Excluding under "all" drops a person matching every value; under "any", any one of them.
    return lambda person: not test(person)


def _strings(value: object, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise invalid(path, f"{path} must be an array of non-empty strings")
    return [str(v) for v in value]


def _list_condition(matches: Callable[[Person, str], bool]) -> Condition:
    def condition(spec: object, path: str, every: bool) -> Predicate:
        values = _strings(spec, path)
        combine = all if every else any
        return lambda person: combine(matches(person, v) for v in values)

    return condition


# Every search compares each person's URL: normalising each once keeps a search of a large
# directory cheap (the function is pure).
@functools.lru_cache(maxsize=65_536)
def _canonical_url(value: str) -> str:
    try:
        return linkedin.normalise(value)
    except linkedin.NotAProfileUrl:
        return value.strip().lower()


def _url_matches(person: Person, value: str) -> bool:
    return _canonical_url(person.linkedin_url) == _canonical_url(value)


def _name_condition(spec: object, path: str, every: bool) -> Predicate:
    obj = _object(spec, path)
    mode = obj.get("mode")
    if not isinstance(mode, str) or mode not in NAME_MODES:
        raise invalid(f"{path}.mode", f"{path}.mode must be one of: SMART, STRICT, WORD")
    values = _strings(obj.get("content"), f"{path}.content")
    combine = all if every else any
    return lambda person: combine(_name_matches(mode, person.full_name, v) for v in values)


def _folded_words(text: str) -> list[str]:
    plain = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in plain if not unicodedata.combining(ch)).casefold().split()


def _name_matches(mode: str, full_name: str, value: str) -> bool:
    """STRICT: the whole name; WORD: every word; SMART: every word as a prefix, accents aside."""
    if mode == "STRICT":
        return full_name.casefold().split() == value.casefold().split()
    if mode == "WORD":
        have = full_name.casefold().split()
        return all(word in have for word in value.casefold().split())
    have = _folded_words(full_name)
    return all(any(h.startswith(w) for h in have) for w in _folded_words(value))


def _company_matches(person: Person, value: str) -> bool:
    wanted = value.strip().casefold()
    return wanted in (person.company_name.casefold(), person.company_domain.casefold())


def _company(value: object, path: str) -> list[Predicate]:
    periods = _object(value, path)
    predicates: list[Predicate] = []
    for period, groups in periods.items():
        here = f"{path}.{period}"
        if period == "current":
            predicates += _groups(groups, here, _list_condition(_company_matches))
        elif period == "previous":
            # The simulator's people have no previous companies: nobody matches an include.
            predicates += _groups(groups, here, _list_condition(lambda _p, _v: False))
        else:
            raise invalid(here, f"{here} is not 'current' or 'previous'")
    return predicates


def counted_kind(kinds: Sequence[str]) -> Mapping[str, int]:
    """The stats increments of one search: one per matched filter kind, or ``none``."""
    used = [kind for kind in FILTER_KINDS if kind in kinds]
    return dict.fromkeys(used, 1) if used else {"none": 1}
