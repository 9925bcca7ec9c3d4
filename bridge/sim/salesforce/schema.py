"""The org's sObject types, their id prefixes and fields, and the API versions served."""

from __future__ import annotations

from collections.abc import Mapping

LATEST_VERSION = 67  # Summer '26

KEY_PREFIXES = {"Lead": "00Q", "Contact": "003", "Account": "001"}
_LANCE = ("Lance_Last_Enriched__c", "Lance_Status__c")
# LinkedIn_URL__c: the custom field an org adds for a person's LinkedIn URL (matching).
_PERSON = (
    "Id",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "MobilePhone",
    "Description",
    "LinkedIn_URL__c",
)
DEFAULT_SCHEMAS: Mapping[str, frozenset[str]] = {
    "Lead": frozenset((*_PERSON, "Company", "Lance_Person_Id__c", *_LANCE)),
    "Contact": frozenset((*_PERSON, "Lance_Person_Id__c", *_LANCE)),
    "Account": frozenset(
        ("Id", "Name", "Description", "Phone", "Website", "Lance_Company_Id__c", *_LANCE)
    ),
}


def release_label(version: int) -> str:
    """The release name of an API version: 66 -> ``"Spring '26"``, 65 -> ``"Winter '26"``."""
    cycle, season = divmod(version - 63, 3)  # 63.0 is Spring '25; three releases a year
    year = 25 + cycle + (season == 2)  # Winter releases are named after the next year
    return f"{('Spring', 'Summer', 'Winter')[season]} '{year % 100:02d}"
