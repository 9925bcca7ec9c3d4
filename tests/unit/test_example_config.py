"""config/lance-bridge.example.toml documents every settings key, with its default."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pydantic
import pytest

from bridge import model as bridge_model
from bridge import settings as settings_mod
from connectors import hubspot, salesforce, webhook

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "lance-bridge.example.toml"


def _model_of(annotation: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    return None


def _key_paths(model: type[pydantic.BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key of ``model``, as dotted paths, descending into nested sections."""
    paths: list[str] = []
    for name, field in model.model_fields.items():
        if name == "connectors":  # a list of tables, checked separately below
            continue
        path = f"{prefix}{name}"
        nested = _model_of(field.annotation)
        paths += _key_paths(nested, f"{path}.") if nested else [path]
    return paths


def _has(data: dict[str, Any], path: str) -> bool:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _connector(path: Path, name: str) -> Any:
    [found] = [c for c in settings_mod.load(path, environ={}).connectors if c.name == name]
    return found


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    with EXAMPLE.open("rb") as handle:
        return tomllib.load(handle)


def test_the_example_loads() -> None:
    loaded = settings_mod.load(EXAMPLE, environ={})

    assert [c.name for c in loaded.connectors] == ["ops-webhook", "hubspot", "salesforce"]


def test_every_settings_key_is_documented(example: dict[str, Any]) -> None:
    paths = _key_paths(settings_mod.Settings)

    missing = [path for path in paths if not _has(example, path)]

    assert len(paths) > 30  # the walk really reached the nested sections
    assert missing == []


def test_every_section_shows_its_defaults() -> None:
    loaded = settings_mod.load(EXAMPLE, environ={})
    defaults = settings_mod.Settings()

    differing = [
        name
        for name in settings_mod.Settings.model_fields
        if name != "connectors" and getattr(loaded, name) != getattr(defaults, name)
    ]

    assert differing == []


def test_the_webhook_table_documents_every_webhook_key(example: dict[str, Any]) -> None:
    table = example["connectors"][0]

    assert table["type"] == "webhook"
    assert set(webhook.WebhookConfig.model_fields) <= set(table)
    assert tuple(table["events"]) == bridge_model.EVENT_TYPES


def test_the_hubspot_table_documents_every_key_with_its_default(example: dict[str, Any]) -> None:
    table = example["connectors"][1]
    text = EXAMPLE.read_text()

    assert table["type"] == "hubspot"
    # Secrets are shown commented out: they belong in the environment.
    shown = set(table) | {k for k in hubspot.HubSpotConfig.model_fields if f"# {k} = " in text}
    assert set(hubspot.HubSpotConfig.model_fields) <= shown
    loaded = _connector(EXAMPLE, "hubspot")
    defaults = hubspot.HubSpotConfig(name="hubspot", access_token="x")
    assert isinstance(loaded, hubspot.HubSpotConfig)
    assert loaded.contacts == defaults.contacts
    assert loaded.companies == defaults.companies


def test_the_salesforce_table_documents_every_key_with_its_default(
    example: dict[str, Any],
) -> None:
    table = example["connectors"][2]
    text = EXAMPLE.read_text()

    assert table["type"] == "salesforce"
    fields = salesforce.SalesforceConfig.model_fields
    shown = set(table) | {k for k in fields if f"# {k} = " in text}
    assert set(fields) <= shown
    loaded = _connector(EXAMPLE, "salesforce")
    assert isinstance(loaded, salesforce.SalesforceConfig)
    defaults = salesforce.SalesforceConfig(
        name="salesforce", client_id=loaded.client_id, login_url=loaded.login_url
    )
    for key in fields:
        if key not in ("name", "client_id", "login_url"):
            assert getattr(loaded, key) == getattr(defaults, key), key


def test_the_secret_named_in_the_example_is_read_from_the_environment() -> None:
    secret = "whsec_" + "a2V5" * 8  # base64 of 24 bytes
    loaded = settings_mod.load(
        EXAMPLE,
        environ={
            "LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__SECRET": secret,
            "LANCE_BRIDGE_LANCE__TOKEN": "lance-token",
        },
    )

    item = loaded.connectors[0]
    assert isinstance(item, webhook.WebhookConfig)
    assert item.secret.get_secret_value() == secret
    assert loaded.lance.token.get_secret_value() == "lance-token"
