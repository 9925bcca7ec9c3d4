"""HubSpot connector settings: the object types it writes and the keys of its table."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pydantic
from pydantic import Field, SecretStr

from bridge import connector
from connectors import crm, mapping

MAX_INPUTS = 100  # batch read and batch update
MAX_EVENTS = 100  # events in one webhook request

ObjectType = Literal["contacts", "companies"]
# HubSpot's names of an object type in URLs, events and workflow payloads.
_OBJECT_TYPES: dict[str, ObjectType] = {
    "contacts": "contacts",
    "contact": "contacts",
    "0-1": "contacts",
    "companies": "companies",
    "company": "companies",
    "0-2": "companies",
}


def object_type_of(name: str) -> ObjectType | None:
    """``contacts`` or ``companies`` for any of HubSpot's names of them, else ``None``."""
    return _OBJECT_TYPES.get(name.strip().lower())


class ObjectSettings(crm.ObjectSettings):
    """How one object type (contacts or companies) is enriched and written back."""

    MAPPED: ClassVar[str] = "properties"
    DEFAULT_PROPERTIES: ClassVar[dict[str, str]] = {}

    lance_id_property: str = Field(min_length=1)
    properties: dict[str, mapping.PropertyMap] = Field(default_factory=dict)

    @pydantic.field_validator("properties", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        return crm.over_defaults(cls.DEFAULT_PROPERTIES, value)


class ContactSettings(ObjectSettings):
    """``contacts``: a person's emails and phones."""

    DEFAULT_PROPERTIES: ClassVar[dict[str, str]] = {
        "email": "emails[0]",
        "hs_additional_emails": "emails[1:]",
        "phone": "phones[0]",
        "mobilephone": "phones[1]",
    }

    lance_id_property: str = Field(default="lance_person_id", min_length=1)
    enrich: tuple[Literal["emails", "phones"], ...] = ("emails", "phones")
    # A contact without a Lance id is looked up at Lance first (DESIGN §12): by its LinkedIn
    # URL, and, only when named here, by full name + company.
    match_by: tuple[Literal["linkedin", "name_company"], ...] = ("linkedin",)
    linkedin_property: str = Field(default="hs_linkedin_url", min_length=1)
    first_name_property: str = Field(default="firstname", min_length=1)
    last_name_property: str = Field(default="lastname", min_length=1)
    company_property: str = Field(default="company", min_length=1)
    write_back: bool = True  # write the Lance id found to lance_id_property

    def match_properties(self) -> list[str]:
        """The properties a contact's match reads, in the order ``match_by`` names them."""
        names: list[str] = []
        for kind in self.match_by:
            if kind == "linkedin":
                names.append(self.linkedin_property)
            else:
                names += [self.first_name_property, self.last_name_property]
                names.append(self.company_property)
        return names

    properties: dict[str, mapping.PropertyMap] = Field(
        default_factory=lambda: mapping.mappings(ContactSettings.DEFAULT_PROPERTIES)
    )


class CompanySettings(ObjectSettings):
    """``companies``: a company's summary (tracked, since Lance starts those itself)."""

    DEFAULT_PROPERTIES: ClassVar[dict[str, str]] = {"description": "summary"}

    lance_id_property: str = Field(default="lance_company_id", min_length=1)
    enrich: tuple[Literal["summary"], ...] = ("summary",)
    properties: dict[str, mapping.PropertyMap] = Field(
        default_factory=lambda: mapping.mappings(CompanySettings.DEFAULT_PROPERTIES)
    )


class HubSpotConfig(connector.ConnectorConfig):
    """Settings of a HubSpot connector (``type = "hubspot"``)."""

    type: str = "hubspot"
    base_url: str = "https://api.hubapi.com"
    access_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    client_id: str = ""
    client_secret: SecretStr | None = None
    portal_id: int | None = None
    legacy_signatures: bool = False
    signature_max_age_seconds: float = Field(default=300.0, gt=0)
    rate_limit_requests: int = Field(default=100, ge=0)
    rate_limit_window_seconds: float = Field(default=10.0, gt=0)
    token_refresh_margin_seconds: float = Field(default=300.0, ge=0)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    contacts: ContactSettings = Field(default_factory=ContactSettings)
    companies: CompanySettings = Field(default_factory=CompanySettings)

    _secrets_not_blank = pydantic.field_validator("access_token", "refresh_token", "client_secret")(
        connector.not_blank
    )

    @pydantic.field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @pydantic.model_validator(mode="after")
    def _one_auth(self) -> HubSpotConfig:
        if self.access_token is None and self.refresh_token is None:
            raise ValueError(
                "set access_token (a private app's token) or refresh_token with client_id and"
                " client_secret (OAuth)"
            )
        if self.refresh_token is not None and not (self.client_id and self.client_secret):
            raise ValueError("OAuth (refresh_token) also needs client_id and client_secret")
        return self

    def objects(self) -> dict[ObjectType, ObjectSettings]:
        """The settings of each object type."""
        return {"contacts": self.contacts, "companies": self.companies}


def is_id(value: Any) -> bool:
    """Whether ``value`` is a HubSpot record id: a positive number, or its digits."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 30
