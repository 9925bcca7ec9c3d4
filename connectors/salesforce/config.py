"""Salesforce connector settings: the sObject types it writes and the keys of its table."""

from __future__ import annotations

import hmac
import re
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import Field, SecretStr

from bridge import connector
from connectors import crm, mapping

MAX_RECORDS = 200  # sObject Collections update
MAX_RETRIEVE_IDS = 2000  # sObject Collections retrieve
MAX_NOTIFICATIONS = 100  # per Outbound Message
MAX_FLOW_RECORDS = 200  # per Flow callout
SLOW_DOWN_DELAY_S = 900.0
_SALESFORCE_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_SHARED_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})
_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
UUID4 = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
UUID4_RE = re.compile(UUID4)
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

ObjectType = Literal["Lead", "Contact", "Account"]
OBJECT_TYPES: tuple[ObjectType, ...] = ("Lead", "Contact", "Account")
BY_LOWER: dict[str, ObjectType] = {name.lower(): name for name in OBJECT_TYPES}


def object_type_of(name: str) -> ObjectType | None:
    """``Lead``, ``Contact`` or ``Account`` for any casing of those names, else ``None``."""
    return BY_LOWER.get(name.strip().lower())


def id18(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character Salesforce id, or ``None`` if malformed."""
    if not _SALESFORCE_ID.fullmatch(value):
        return None
    if len(value) == 18:
        return value
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, char in enumerate(value[start : start + 5]) if char.isupper())
        suffix += _CHECKSUM_ALPHABET[bits]
    return value + suffix


def same_org_id(given: str, expected: str) -> bool:
    """Whether two 15- or 18-character ids name the same thing (the first 15 are the id)."""
    valid = len(given) in (15, 18) and len(expected) in (15, 18)
    return valid and hmac.compare_digest(given[:15].encode(), expected[:15].encode())


class ObjectSettings(crm.ObjectSettings):
    """How one sObject type (Lead, Contact or Account) is enriched and written back."""

    MAPPED: ClassVar[str] = "fields"
    DEFAULT_FIELDS: ClassVar[dict[str, str]] = {}

    lance_id_field: str = Field(min_length=1)
    fields: dict[str, mapping.PropertyMap] = Field(default_factory=dict)

    @pydantic.field_validator("fields", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        return crm.over_defaults(cls.DEFAULT_FIELDS, value)

    @pydantic.field_validator("fields")
    @classmethod
    def _api_names(cls, value: dict[str, mapping.PropertyMap]) -> dict[str, mapping.PropertyMap]:
        bad = [name for name in value if not _API_NAME.match(name)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a field API name (e.g. Phone, Lance_Status__c)")
        return value

    @pydantic.field_validator("lance_id_field")
    @classmethod
    def _api_name(cls, value: str) -> str:
        if not _API_NAME.match(value):
            raise ValueError(f"{value!r} is not a field API name (e.g. Lance_Person_Id__c)")
        return value


class PersonSettings(ObjectSettings):
    """``Lead`` and ``Contact``: a person's emails and phones."""

    DEFAULT_FIELDS: ClassVar[dict[str, str]] = {
        "Email": "emails[0]",
        "Phone": "phones[0]",
        "MobilePhone": "phones[1]",
    }

    lance_id_field: str = Field(default="Lance_Person_Id__c", min_length=1)
    enrich: tuple[Literal["emails", "phones"], ...] = ("emails", "phones")
    # A record without a Lance id is looked up at Lance first (DESIGN §12): by the LinkedIn
    # URL in ``linkedin_field`` (a custom field), and only when named here by name + company.
    match_by: tuple[Literal["linkedin", "name_company"], ...] = ("linkedin",)
    linkedin_field: str = Field(default="LinkedIn_URL__c", min_length=1)
    first_name_field: str = Field(default="FirstName", min_length=1)
    last_name_field: str = Field(default="LastName", min_length=1)
    company_field: str = Field(default="Company", min_length=1)
    write_back: bool = True  # write the Lance id found to lance_id_field
    fields: dict[str, mapping.PropertyMap] = Field(
        default_factory=lambda: mapping.mappings(PersonSettings.DEFAULT_FIELDS)
    )


class AccountSettings(ObjectSettings):
    """``Account``: a company's summary (tracked, since Lance starts those itself)."""

    DEFAULT_FIELDS: ClassVar[dict[str, str]] = {"Description": "summary"}

    lance_id_field: str = Field(default="Lance_Company_Id__c", min_length=1)
    enrich: tuple[Literal["summary"], ...] = ("summary",)
    fields: dict[str, mapping.PropertyMap] = Field(
        default_factory=lambda: mapping.mappings(AccountSettings.DEFAULT_FIELDS)
    )


class SalesforceConfig(connector.ConnectorConfig):
    """Settings of a Salesforce connector (``type = "salesforce"``)."""

    type: str = "salesforce"
    login_url: str = "https://login.salesforce.com"
    auth: Literal["client_credentials", "jwt_bearer"] = "client_credentials"
    client_id: str = ""
    client_secret: SecretStr | None = None
    username: str = ""
    private_key_file: Path | None = None
    audience: str = ""
    api_version: str = "66.0"
    organization_id: str = ""
    action_ids: tuple[str, ...] = ()
    flow_token: SecretStr | None = None
    slow_down_at: float = Field(default=0.9, gt=0, le=1)
    slow_down_delay_seconds: float = Field(default=SLOW_DOWN_DELAY_S, ge=0)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    lead: PersonSettings = Field(default_factory=PersonSettings)
    contact: PersonSettings = Field(default_factory=PersonSettings)
    account: AccountSettings = Field(default_factory=AccountSettings)

    _secrets_not_blank = pydantic.field_validator("client_secret", "flow_token")(
        connector.not_blank
    )

    @pydantic.field_validator("login_url", "audience")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value:
            return value
        parts = urllib.parse.urlsplit(value)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(
                "must be a URL starting with https:// (e.g. https://acme.my.salesforce.com)"
            )
        if not parts.hostname or parts.path or parts.query:
            raise ValueError(
                "must be the host only, e.g. https://acme.my.salesforce.com"
                " (no /services/oauth2/token: the bridge adds it)"
            )
        return value

    @pydantic.field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        version = value.strip().removeprefix("v")
        if not re.fullmatch(r"\d{2,3}\.0", version):
            raise ValueError(f"{value!r} is not an API version like 66.0")
        return version

    @pydantic.field_validator("organization_id")
    @classmethod
    def _org_id(cls, value: str) -> str:
        if value and not (value.startswith("00D") and _SALESFORCE_ID.fullmatch(value)):
            raise ValueError(
                "a 15- or 18-character id starting with 00D (Setup → Company Information)"
            )
        return value

    @pydantic.field_validator("action_ids")
    @classmethod
    def _action_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [item for item in value if not _SALESFORCE_ID.fullmatch(item)]
        if bad:
            raise ValueError(f"{bad[0][:40]!r} is not a 15- or 18-character Outbound Message id")
        return value

    @pydantic.model_validator(mode="after")
    def _auth_complete(self) -> SalesforceConfig:
        if not self.client_id:
            raise ValueError("set client_id: the consumer key of the Salesforce app")
        host = urllib.parse.urlsplit(self.login_url).hostname
        if self.auth == "client_credentials" and host in _SHARED_LOGIN_HOSTS:
            raise ValueError(
                f"auth = client_credentials needs login_url set to your My Domain URL"
                f" (https://<domain>.my.salesforce.com); {host} refuses this flow"
            )
        if self.auth == "jwt_bearer" and not (self.username and self.private_key_file):
            raise ValueError("auth = jwt_bearer also needs username and private_key_file")
        return self

    def objects(self) -> dict[ObjectType, ObjectSettings]:
        """The settings of each sObject type."""
        return {"Lead": self.lead, "Contact": self.contact, "Account": self.account}
