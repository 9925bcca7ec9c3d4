"""Configuration: a TOML file overlaid by ``LANCE_BRIDGE_*`` environment variables.

Every key can be set in the file or the environment (``LANCE_BRIDGE_LANCE__TOKEN`` sets
``lance.token``; ``__`` separates levels). Connector tables are addressed by name:
``LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__SECRET`` sets ``secret`` of the connector named
``ops-webhook`` (compared case-insensitively, ``-`` written as ``_``). Unknown keys are errors
naming the key path.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import pydantic_settings
from pydantic import Field, SecretStr

from bridge import connector, errors, jsonbody, registry

ENV_PREFIX = "LANCE_BRIDGE_"
DEFAULT_CONFIG_PATH = Path("lance-bridge.toml")
DEFAULT_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class _Section(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class LanceSettings(_Section):
    """``[lance]``: where Lance is and how to talk to it."""

    base_url: str = "https://api.lance.app"
    token: SecretStr = SecretStr("")
    timeout_seconds: float = Field(default=30.0, gt=0)
    trigger_batch_size: int = Field(default=100, ge=1, le=100)
    query_batch_size: int = Field(default=200, ge=1, le=200)
    max_concurrency: int = Field(default=4, ge=1, le=64)

    @pydantic.field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class LedgerSettings(_Section):
    """``[ledger]``: where every enrichment and delivery is recorded.

    A SQLite file at ``path`` by default; a ``postgresql://`` ``url`` selects PostgreSQL. The
    password never belongs in the file: the URL from the environment, ``PGPASSWORD`` or
    ``password_file`` supply it.
    """

    path: Path = Path("lance-bridge.db")
    synchronous: Literal["normal", "full"] = "normal"
    url: SecretStr = SecretStr("")
    password_file: str = ""  # a file holding the PostgreSQL password (Docker secrets)
    # This replica's name on its claims, in `status` and /metrics; empty: hostname-pid-random.
    replica_id: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9._-]*$")

    @pydantic.field_validator("url")
    @classmethod
    def _postgres_only(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if text and not text.startswith(("postgresql://", "postgres://")):
            # Never echo the value: it may hold a password.
            raise ValueError("must start with postgresql:// (or be empty for SQLite)")
        return value


class ServerSettings(_Section):
    """``[server]``: the HTTP API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    api_tokens: tuple[SecretStr, ...] = ()
    public_url: str = ""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_json_depth: int = Field(default=jsonbody.DEFAULT_MAX_DEPTH, ge=1, le=jsonbody.MAX_DEPTH)
    drain_seconds: float = Field(default=10.0, ge=0)
    # A client that stalls is disconnected (DESIGN §14): CRMs and API clients send a whole
    # request in well under a second, so none of these waits is longer than 30 s.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    keepalive_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=1000, ge=1)

    @pydantic.field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @pydantic.field_validator("api_tokens")
    @classmethod
    def _no_blank_tokens(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(not token.get_secret_value().strip() for token in value):
            raise ValueError("tokens must not be blank (a blank token would open the API)")
        return value


class PollSettings(_Section):
    """``[poll]``: how in-flight enrichments are polled."""

    interval_seconds: float = Field(default=2.0, gt=0)
    max_delay_seconds: float = Field(default=30.0, gt=0)
    backoff_factor: float = Field(default=1.5, ge=1.0)
    young_seconds: float = Field(default=30.0, ge=0)
    jitter: float = Field(default=0.2, ge=0, lt=1)
    max_requests_per_tick: int = Field(default=100, ge=1)
    concurrency: int = Field(default=4, ge=1, le=64)
    lost_after_seconds: float = Field(default=120.0, gt=0)
    expire_after_seconds: float = Field(default=900.0, gt=0)

    @pydantic.model_validator(mode="after")
    def _cap_above_interval(self) -> PollSettings:
        if self.max_delay_seconds < self.interval_seconds:
            raise ValueError("max_delay_seconds must be at least interval_seconds")
        return self


class TriggerSettings(_Section):
    """``[trigger]``: how queued enrichments are sent to Lance."""

    interval_seconds: float = Field(default=1.0, gt=0)
    max_requests_per_run: int = Field(default=50, ge=1)
    credits_backoff_seconds: float = Field(default=300.0, gt=0)


class FetchSettings(_Section):
    """``[fetch]``: how enriched values are read once an enrichment finished with data."""

    interval_seconds: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=500, ge=1)
    concurrency: int = Field(default=8, ge=1, le=64)
    merge_wait_seconds: float = Field(default=5.0, ge=0)


class DeliverySettings(_Section):
    """``[delivery]``: how completion events are delivered to connectors."""

    interval_seconds: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=1000, ge=1)
    retry_schedule_seconds: tuple[float, ...] = Field(
        default=DEFAULT_RETRY_SCHEDULE_S, min_length=1
    )
    jitter: float = Field(default=0.2, ge=0, lt=1)
    linger_seconds: float = Field(default=1.0, ge=0)
    merge_wait_seconds: float = Field(default=30.0, ge=0)


class InboundSettings(_Section):
    """``[inbound]``: events CRMs send to ``/hooks/*``."""

    interval_seconds: float = Field(default=2.0, gt=0)
    lookup_batch_size: int = Field(default=500, ge=1)
    retention_days: float = Field(default=7.0, gt=0)


class MatchSettings(_Section):
    """``[match]``: finding the Lance person of CRM records without a Lance id (DESIGN §12)."""

    interval_seconds: float = Field(default=2.0, gt=0)
    batch_size: int = Field(default=500, ge=1)  # waiting events taken per run
    # Person searches let go per rolling minute (Lance documents no limit; 0: no budget).
    searches_per_minute: int = Field(default=300, ge=0)
    concurrency: int = Field(default=4, ge=1, le=64)
    # Candidates asked per search: enough to tell one from several, and to list them.
    candidates: int = Field(default=10, ge=2, le=100)
    retry_seconds: float = Field(default=60.0, gt=0)  # a failed search is asked again after
    write_back_batch_size: int = Field(default=1000, ge=1)  # write-backs taken per run


class LogSettings(_Section):
    """``[log]``: logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class UISettings(_Section):
    """``[ui]``: the web dashboard at ``/ui/``."""

    enabled: bool = True
    session_seconds: int = Field(default=28_800, ge=60, le=2_592_000)


class Settings(pydantic_settings.BaseSettings):
    """The whole configuration. Build it with :func:`load`."""

    model_config = pydantic_settings.SettingsConfigDict(extra="forbid", frozen=True)

    lance: LanceSettings = LanceSettings()
    ledger: LedgerSettings = LedgerSettings()
    server: ServerSettings = ServerSettings()
    poll: PollSettings = PollSettings()
    trigger: TriggerSettings = TriggerSettings()
    fetch: FetchSettings = FetchSettings()
    delivery: DeliverySettings = DeliverySettings()
    inbound: InboundSettings = InboundSettings()
    match: MatchSettings = MatchSettings()
    log: LogSettings = LogSettings()
    ui: UISettings = UISettings()
    connectors: tuple[connector.ConnectorConfig, ...] = ()

    @pydantic.field_validator("connectors", mode="before")
    @classmethod
    def _parse_connectors(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and all(isinstance(item, Mapping) for item in value):
            return tuple(registry.parse_configs(value))
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[pydantic_settings.BaseSettings],
        init_settings: pydantic_settings.PydanticBaseSettingsSource,
        env_settings: pydantic_settings.PydanticBaseSettingsSource,
        dotenv_settings: pydantic_settings.PydanticBaseSettingsSource,
        file_secret_settings: pydantic_settings.PydanticBaseSettingsSource,
    ) -> tuple[pydantic_settings.PydanticBaseSettingsSource, ...]:
        # :func:`load` merges file and environment itself (connector tables are addressed by
        # name, which the stock env source cannot do), so only the merged init data is used.
        return (init_settings,)


def load(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the TOML file (``path``, else ``lance-bridge.toml`` if present) and the environment.

    Args:
        path: An explicit config file; it must exist.
        environ: The environment to read (default ``os.environ``).
        overrides: Values applied last, e.g. from command-line flags, keyed like the TOML.

    Raises:
        errors.ConfigError: One line naming the file or key path and the problem.
    """
    data = _read_toml(path)
    _apply_env(data, os.environ if environ is None else environ)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    try:
        return Settings(**data)
    except pydantic.ValidationError as exc:
        raise errors.ConfigError(registry.describe_validation_error(exc)) from None


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return {}
        path = DEFAULT_CONFIG_PATH
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise errors.ConfigError(
            f"{path}: no such config file (see config/lance-bridge.example.toml)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not parts:
            continue
        if parts[0] == "connectors" and len(parts) > 2:
            _apply_connector_env(data, name, parts[1], parts[2:], raw)
        else:
            _set_path(data, parts, _env_value(raw))


# Variables with the prefix that configure something other than the settings.
_NOT_SETTINGS = frozenset({"LANCE_BRIDGE_CONFIG"})


def _apply_connector_env(
    data: dict[str, Any], variable: str, name: str, keys: list[str], raw: str
) -> None:
    for table in data.get("connectors", []):
        if isinstance(table, dict) and str(table.get("name", "")).lower().replace("-", "_") == name:
            _set_path(table, keys, _env_value(raw))
            return
    raise errors.ConfigError(f"{variable}: no connector named {name!r} in the config file")


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = data.setdefault(part, {})
        if not isinstance(child, dict):
            raise errors.ConfigError(f"{'.'.join(parts)}: {part} is not a table")
        data = child
    data[parts[-1]] = value


def _env_value(raw: str) -> Any:
    # JSON lets lists and numbers through ("[1, 5]"); anything else stays a string.
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw
