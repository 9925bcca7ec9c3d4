"""Fake prospect people and companies the simulator's entity endpoints answer with.

Every value derives from the entity id, so a person looks the same in every run and process;
domains use the reserved ``.example`` TLD so nothing real is ever addressed.
"""

from __future__ import annotations

import random
import uuid

_FIRST_NAMES = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances")
_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Allen")
_JOB_TITLES = ("VP of Engineering", "Head of Sales", "CTO", "Marketing Manager", "Data Scientist")
_SENIORITIES = ("VP", "Head", "C-Suite", "Manager", "Senior")
_CITIES = (
    ("San Francisco", "94105", "United States"),
    ("New York", "10001", "United States"),
    ("London", "EC1A 1BB", "United Kingdom"),
    ("Paris", "75002", "France"),
    ("Berlin", "10115", "Germany"),
)
_COMPANY_WORDS = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Tyrell", "Wonka")
_COMPANY_SUFFIXES = ("Labs", "Systems", "Technologies", "Group", "Industries")
_INDUSTRIES = ("Software", "Financial Services", "Healthcare", "Retail", "Logistics")
_HEADCOUNTS = ("11-50", "51-200", "201-500", "501-1000", "1001-5000")
_ENTITY_CREATED_AT = "2024-01-15T10:30:00.000Z"


def _seeded(entity_id: str) -> random.Random:
    return random.Random(entity_id)  # noqa: S311 - deterministic fake data, not security


def _fake_phone(rng: random.Random) -> str:
    return f"+1-555-{rng.randrange(100, 1000)}-{rng.randrange(10_000):04d}"


def fake_person(person_id: str, *, emails: bool, phones: bool) -> dict[str, object]:
    """A deterministic fake person; ``emails``/``phones`` say whether to show those values."""
    rng = _seeded(person_id)
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    city, postal_code, country = rng.choice(_CITIES)
    company_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    domain = _company_domain(company_id)
    email_values = [f"{first}.{last}@{domain}".lower(), f"{first[0]}{last}@mail.example".lower()]
    phone_values = [_fake_phone(rng), _fake_phone(rng)]
    counts = rng.randint(1, 2), rng.randint(1, 2)
    return {
        "id": person_id,
        "createdAt": _ENTITY_CREATED_AT,
        "updatedAt": _ENTITY_CREATED_AT,
        "firstName": first,
        "lastName": last,
        "jobTitle": rng.choice(_JOB_TITLES),
        "city": city,
        "postalCode": postal_code,
        "country": country,
        "linkedinUrl": f"https://www.linkedin.com/in/{first}{last}-{person_id[:8]}".lower(),
        "phones": phone_values[: counts[0]] if phones else [],
        "emails": email_values[: counts[1]] if emails else [],
        "companyId": company_id,
        "birthDate": None,
        "departments": ["Engineering"],
        "subDepartments": [],
        "functions": ["Engineering"],
        "seniority": rng.choice(_SENIORITIES),
        "languages": [{"language": "English", "level": "Native"}],
        "industry": rng.choice(_INDUSTRIES),
        "skills": ["Leadership"],
        "educations": [],
        "workExperiences": [],
    }


def _company_name(rng: random.Random) -> str:
    return f"{rng.choice(_COMPANY_WORDS)} {rng.choice(_COMPANY_SUFFIXES)}"


def _company_domain(company_id: str) -> str:
    return _company_name(_seeded(company_id)).lower().replace(" ", "") + ".example"


def fake_company(company_id: str, *, summary: bool) -> dict[str, object]:
    """A deterministic fake company; ``summary`` says whether the summary is available."""
    rng = _seeded(company_id)
    name = _company_name(rng)
    domain = name.lower().replace(" ", "") + ".example"
    city, postal_code, country = rng.choice(_CITIES)
    industry, headcount = rng.choice(_INDUSTRIES), rng.choice(_HEADCOUNTS)
    text = f"{name} is a {industry.lower()} company of {headcount} people based in {city}."
    return {
        "id": company_id,
        "createdAt": _ENTITY_CREATED_AT,
        "updatedAt": _ENTITY_CREATED_AT,
        "name": name,
        "description": f"{name} builds things for the {industry.lower()} industry.",
        "summary": text if summary else None,
        "headcount": headcount,
        "industry": industry,
        "phones": [_fake_phone(rng)],
        "linkedinUrl": f"https://www.linkedin.com/company/{domain.split('.')[0]}",
        "websiteUrl": f"https://www.{domain}",
        "domain": domain,
        "city": city,
        "postalCode": postal_code,
        "country": country,
        "logoUrl": None,
        "baseProviderId": None,
        "bullhornId": None,
        "crmId": None,
        "legalName": f"{name} Inc.",
        "foundedYear": rng.randint(1990, 2022),
        "revenue": None,
    }
