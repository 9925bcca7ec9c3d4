"""What a HubSpot account holds: object types, their properties and how each reads."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.sim.hubspot.errors import invalid

DEFAULT_PORTAL_ID = 62515

DEFAULT_SCHEMAS: dict[str, frozenset[str]] = {
    "contacts": frozenset(
        [
            "email",
            "hs_additional_emails",
            "phone",
            "mobilephone",
            "firstname",
            "lastname",
            "company",
            "hs_linkedin_url",
            "lance_person_id",
            "lance_company_id",
            "lance_last_enriched",
            "lance_enrichment_status",
            "hs_object_id",
            "createdate",
            "lastmodifieddate",
        ]
    ),
    "companies": frozenset(
        [
            "name",
            "domain",
            "description",
            "phone",
            "lance_company_id",
            "lance_last_enriched",
            "lance_enrichment_status",
            "hs_object_id",
            "createdate",
            "hs_lastmodifieddate",
        ]
    ),
}
_TYPES = {"contacts": "contacts", "0-1": "contacts", "companies": "companies", "0-2": "companies"}
TYPE_IDS = {"contacts": "0-1", "companies": "0-2"}
SINGULAR = {"contacts": "CONTACT", "companies": "COMPANY"}
MODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
GROUPS = {"contacts": "contactinformation", "companies": "companyinformation"}
UNIQUE = {"contacts": frozenset({"email"}), "companies": frozenset[str]()}
# What HubSpot returns when a read names no properties.
DEFAULT_READ = {
    "contacts": ("email", "firstname", "lastname"),
    "companies": ("domain", "name"),
}
READ_ONLY = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate"})
KINDS = {"hs_object_id": ("number", "number")} | dict.fromkeys(
    ("createdate", "lastmodifieddate", "hs_lastmodifieddate"), ("datetime", "date")
)

Properties = dict[str, str]


def iso(timestamp_s: float) -> str:
    """Unix seconds as HubSpot writes timestamps: ISO 8601, milliseconds, ``Z``."""
    return datetime.fromtimestamp(timestamp_s, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def canonical_type(object_type: str) -> str | None:
    """``contacts`` or ``companies`` for a name or ``0-1``/``0-2`` id; ``None`` if unknown."""
    return _TYPES.get(object_type)


def resolve(object_type: str) -> str:
    """The canonical type of a path segment; 400 if unknown."""
    canonical = canonical_type(object_type)
    if canonical is None:
        raise invalid(f"Unable to infer object type from: {object_type}")
    return canonical


def checked_type(object_type: str) -> str:
    """The canonical type of an argument; ``ValueError`` if unknown."""
    canonical = canonical_type(object_type)
    if canonical is None:
        raise ValueError(f"unknown object type {object_type!r}; use contacts, companies, 0-1, 0-2")
    return canonical
