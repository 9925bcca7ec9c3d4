"""Configuration: the TOML file, ``LANCE_BRIDGE_*`` overrides, and one-line errors naming the key.

Every test passes ``environ=`` to :func:`bridge.settings.load`, so nothing depends on the shell.
"""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bridge import errors, settings

# Distinctive strings: if one shows up in a repr or an error message, a secret leaked.
LANCE_TOKEN = "lance-tok-ZX81-never-print-me"
API_TOKEN = "api-tok-PDP11-never-print-me"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-key-VAX780-never-print!!").decode()
OTHER_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"other-key-CRAY1--never-print-me!").decode()
# 17 base64 characters: the Standard Webhooks library cannot decode it.
UNUSABLE_SECRET = "whsec_Zx81NeverPrintMeX"
SECRETS = (
    LANCE_TOKEN,
    API_TOKEN,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET.removeprefix("whsec_"),
    OTHER_WEBHOOK_SECRET.removeprefix("whsec_"),
)

FULL = f"""
[lance]
base_url = "http://127.0.0.1:9999/"
token = "{LANCE_TOKEN}"

[ledger]
path = "data/bridge.db"

[server]
port = 8181
api_tokens = ["{API_TOKEN}"]

[poll]
interval_seconds = 3.5

[[connectors]]
name = "ops-webhook"
type = "webhook"
url = "https://hooks.example/in"
secret = "{WEBHOOK_SECRET}"
events = ["enrichment.finished"]
"""


def _write(tmp_path: Path, text: str, name: str = "lance-bridge.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str | None, env: dict[str, str] | None = None) -> Any:
    path = None if text is None else _write(tmp_path, text)
    return settings.load(path, environ=env or {})


def _error(tmp_path: Path, text: str | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(errors.ConfigError) as caught:
        _load(tmp_path, text, env)
    message = caught.value.message
    assert "\n" not in message, "config errors are one line"
    return message


@pytest.fixture(autouse=True)
def _no_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory so a developer's ./lance-bridge.toml is never read."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


# -- loading ---------------------------------------------------------------------------------


def test_defaults_without_a_file_or_environment() -> None:
    loaded = settings.load(None, environ={})
    assert loaded.lance.base_url == "https://api.lance.app"
    assert loaded.lance.token.get_secret_value() == ""
    assert loaded.poll.interval_seconds == 2.0
    assert loaded.server.api_tokens == ()
    assert loaded.delivery.retry_schedule_seconds == settings.DEFAULT_RETRY_SCHEDULE_S
    assert loaded.connectors == ()


def test_a_toml_file_is_read(tmp_path: Path) -> None:
    loaded = _load(tmp_path, FULL)
    assert loaded.lance.base_url == "http://127.0.0.1:9999"  # trailing slash dropped
    assert loaded.lance.token.get_secret_value() == LANCE_TOKEN
    assert loaded.ledger.path == Path("data/bridge.db")
    assert loaded.server.port == 8181
    assert [t.get_secret_value() for t in loaded.server.api_tokens] == [API_TOKEN]
    assert loaded.poll.interval_seconds == 3.5
    [hook] = loaded.connectors
    assert (hook.name, hook.type, hook.events) == (
        "ops-webhook",
        "webhook",
        ("enrichment.finished",),
    )


def test_the_default_file_in_the_working_directory_is_read() -> None:
    Path("lance-bridge.toml").write_text("[poll]\ninterval_seconds = 7\n", encoding="utf-8")
    assert settings.load(None, environ={}).poll.interval_seconds == 7.0


def test_settings_are_frozen(tmp_path: Path) -> None:
    loaded = _load(tmp_path, FULL)
    with pytest.raises(ValueError):
        loaded.poll.interval_seconds = 1.0  # type: ignore[misc]


# -- environment -----------------------------------------------------------------------------


def _token(loaded: settings.Settings) -> str:
    return loaded.lance.token.get_secret_value()


def _api_tokens(loaded: settings.Settings) -> list[str]:
    return [t.get_secret_value() for t in loaded.server.api_tokens]


def _hook_secret(loaded: settings.Settings) -> str:
    [hook] = loaded.connectors
    assert hook.name == "ops-webhook"
    return hook.secret.get_secret_value()  # type: ignore[attr-defined, no-any-return]


ENV_CASES = [
    pytest.param({"LANCE_BRIDGE_LANCE__TOKEN": "from-env"}, _token, "from-env", id="lance-token"),
    pytest.param(
        {"LANCE_BRIDGE_POLL__INTERVAL_SECONDS": "0.25"},
        lambda s: s.poll.interval_seconds,
        0.25,
        id="poll-interval",
    ),
    pytest.param(
        {"LANCE_BRIDGE_SERVER__API_TOKENS": "one, two ,three"},
        _api_tokens,
        ["one", "two", "three"],
        id="api-tokens-comma-list",
    ),
    pytest.param(
        {"LANCE_BRIDGE_SERVER__API_TOKENS": '["one", "two,with-comma"]'},
        _api_tokens,
        ["one", "two,with-comma"],
        id="api-tokens-json-list",
    ),
    pytest.param({"LANCE_BRIDGE_SERVER__API_TOKENS": ""}, _api_tokens, [], id="api-tokens-empty"),
    pytest.param(
        {"LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__SECRET": OTHER_WEBHOOK_SECRET},
        _hook_secret,
        OTHER_WEBHOOK_SECRET,
        id="connector-by-name",
    ),
    pytest.param(
        {"LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__EVENTS": '["enrichment.failed"]'},
        lambda s: s.connectors[0].events,
        ("enrichment.failed",),
        id="connector-json-list",
    ),
    pytest.param(
        {"LANCE_BRIDGE_DELIVERY__RETRY_SCHEDULE_SECONDS": "[0, 1.5, 60]"},
        lambda s: s.delivery.retry_schedule_seconds,
        (0.0, 1.5, 60.0),
        id="json-number-list",
    ),
    pytest.param(
        {"LANCE_BRIDGE_SERVER__PORT": "9090"}, lambda s: s.server.port, 9090, id="integer"
    ),
    pytest.param(
        {"lance_bridge_lance__token": "lower-case-prefix"},
        _token,
        LANCE_TOKEN,
        id="prefix-is-case-sensitive",
    ),
    pytest.param(
        {"LANCE_BRIDGE_CONFIG": "/elsewhere.toml"},
        lambda s: s.poll.interval_seconds,
        3.5,
        id="config-variable-is-not-a-setting",
    ),
    pytest.param({"OTHER_APP_LANCE__TOKEN": "x"}, _token, LANCE_TOKEN, id="other-prefix-ignored"),
]


@pytest.mark.parametrize(("env", "read", "expected"), ENV_CASES)
def test_the_environment_overrides_the_file(
    tmp_path: Path, env: dict[str, str], read: Any, expected: Any
) -> None:
    assert read(_load(tmp_path, FULL, env)) == expected


def test_the_environment_works_without_a_file() -> None:
    loaded = settings.load(
        None,
        environ={
            "LANCE_BRIDGE_LANCE__TOKEN": LANCE_TOKEN,
            "LANCE_BRIDGE_POLL__INTERVAL_SECONDS": "5",
            "LANCE_BRIDGE_SERVER__API_TOKENS": API_TOKEN,
        },
    )
    assert _token(loaded) == LANCE_TOKEN
    assert loaded.poll.interval_seconds == 5.0
    assert _api_tokens(loaded) == [API_TOKEN]


def test_the_environment_beats_the_file_key_by_key(tmp_path: Path) -> None:
    loaded = _load(tmp_path, FULL, {"LANCE_BRIDGE_SERVER__PORT": "9191"})
    assert loaded.server.port == 9191
    assert _api_tokens(loaded) == [API_TOKEN]  # the rest of [server] still comes from the file


def test_connector_names_match_case_and_dash_insensitively(tmp_path: Path) -> None:
    text = FULL.replace('name = "ops-webhook"', 'name = "Ops-Webhook"')
    loaded = _load(
        tmp_path, text, {"LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__URL": "https://other.example/x"}
    )
    assert str(loaded.connectors[0].url) == "https://other.example/x"  # type: ignore[attr-defined]


def test_a_whole_connector_list_can_come_from_the_environment() -> None:
    tables = [
        {"name": "a", "type": "webhook", "url": "https://a.example", "secret": WEBHOOK_SECRET},
        {"name": "b", "type": "webhook", "url": "https://b.example", "secret": WEBHOOK_SECRET},
    ]
    loaded = settings.load(
        None,
        environ={
            "LANCE_BRIDGE_CONNECTORS": json.dumps(tables),
            "LANCE_BRIDGE_CONNECTORS__B__URL": "https://c.example",
        },
    )
    assert [c.name for c in loaded.connectors] == ["a", "b"]
    assert str(loaded.connectors[1].url) == "https://c.example/"  # type: ignore[attr-defined]


def test_overrides_beat_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL)
    loaded = settings.load(
        path,
        environ={"LANCE_BRIDGE_SERVER__PORT": "9191"},
        overrides={"server": {"port": 7070}},
    )
    assert loaded.server.port == 7070
    assert _api_tokens(loaded) == [API_TOKEN]


# -- errors ----------------------------------------------------------------------------------

CONNECTOR = """
[[connectors]]
name = "ops-webhook"
type = "webhook"
url = "https://hooks.example/in"
secret = "{secret}"
"""

# (id, file text or None, environment, what the one-line message must say)
ERROR_CASES: list[tuple[str, str | None, dict[str, str], str]] = [
    (
        "unknown-key-in-file",
        "[poll]\nintervl_seconds = 2\n",
        {},
        "poll.intervl_seconds: unknown key",
    ),
    ("unknown-section-in-file", "[polling]\ninterval_seconds = 2\n", {}, "polling: unknown key"),
    ("unknown-top-level-key", "debug = true\n", {}, "debug: unknown key"),
    (
        "unknown-key-via-env",
        None,
        {"LANCE_BRIDGE_POLL__INTERVL_SECONDS": "2"},
        "poll.intervl_seconds: unknown key",
    ),
    (
        "single-underscore-nesting",
        None,
        {"LANCE_BRIDGE_POLL_INTERVAL_SECONDS": "2"},
        "poll_interval_seconds: unknown key",
    ),
    (
        "negative-interval-in-file",
        "[poll]\ninterval_seconds = -1\n",
        {},
        "poll.interval_seconds: Input should be greater than 0",
    ),
    (
        "negative-interval-via-env",
        None,
        {"LANCE_BRIDGE_POLL__INTERVAL_SECONDS": "-1"},
        "poll.interval_seconds: Input should be greater than 0",
    ),
    (
        "not-a-number",
        None,
        {"LANCE_BRIDGE_POLL__INTERVAL_SECONDS": "fast"},
        "poll.interval_seconds: Input should be a valid number",
    ),
    ("port-out-of-range", "[server]\nport = 70000\n", {}, "server.port:"),
    ("tiny-body-limit", "[server]\nmax_body_bytes = 10\n", {}, "server.max_body_bytes:"),
    (
        "json-depth-beyond-the-parsers",
        "[server]\nmax_json_depth = 500\n",
        {},
        "server.max_json_depth: Input should be less than or equal to 200",
    ),
    (
        "trigger-batch-over-lance-limit",
        "[lance]\ntrigger_batch_size = 101\n",
        {},
        "lance.trigger_batch_size: Input should be less than or equal to 100",
    ),
    (
        "query-batch-over-lance-limit",
        None,
        {"LANCE_BRIDGE_LANCE__QUERY_BATCH_SIZE": "201"},
        "lance.query_batch_size:",
    ),
    (
        "base-url-scheme",
        '[lance]\nbase_url = "ftp://lance.example"\n',
        {},
        "lance.base_url: Value error, must start with http:// or https://",
    ),
    ("log-level", '[log]\nlevel = "loud"\n', {}, "log.level: Input should be"),
    ("section-not-a-table", "poll = 5\n", {}, "poll: Input should be a valid dictionary"),
    (
        "env-below-a-value",
        "[poll]\ninterval_seconds = 2\n",
        {"LANCE_BRIDGE_POLL__INTERVAL_SECONDS__MAX": "1"},
        "poll.interval_seconds.max: interval_seconds is not a table",
    ),
    (
        "unknown-connector-type",
        '[[connectors]]\nname = "x"\ntype = "carrier-pigeon"\n',
        {},
        "connectors[0].type: unknown connector type 'carrier-pigeon'"
        " (hubspot, salesforce, webhook)",
    ),
    (
        "connector-without-type",
        '[[connectors]]\nname = "x"\n',
        {},
        "connectors[0].type: unknown connector type None",
    ),
    (
        "duplicate-connector-names",
        CONNECTOR.format(secret=WEBHOOK_SECRET) * 2,
        {},
        "connectors: duplicate name 'ops-webhook'; names are unique",
    ),
    (
        "second-connector-missing-url",
        CONNECTOR.format(secret=WEBHOOK_SECRET)
        + f'[[connectors]]\nname = "b"\ntype = "webhook"\nsecret = "{WEBHOOK_SECRET}"\n',
        {},
        "connectors[1].url: Field required",
    ),
    (
        "unknown-connector-key",
        CONNECTOR.format(secret=WEBHOOK_SECRET) + 'colour = "red"\n',
        {},
        "connectors[0].colour: unknown key",
    ),
    (
        "unknown-connector-key-via-env",
        CONNECTOR.format(secret=WEBHOOK_SECRET),
        {"LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__COLOUR": "red"},
        "connectors[0].colour: unknown key",
    ),
    (
        "connector-name-pattern",
        CONNECTOR.format(secret=WEBHOOK_SECRET).replace("ops-webhook", "ops webhook"),
        {},
        "connectors[0].name: String should match pattern",
    ),
    (
        "unknown-event",
        CONNECTOR.format(secret=WEBHOOK_SECRET) + 'events = ["enrichment.done"]\n',
        {},
        "connectors[0].events.0: Input should be",
    ),
    (
        "empty-webhook-secret",
        CONNECTOR.format(secret="whsec_"),
        {},
        "connectors[0].secret: Value error, must be a Standard Webhooks secret",
    ),
    (
        "webhook-secret-not-base64",
        CONNECTOR.format(secret="whsec_!!!!"),
        {},
        "connectors[0].secret: Value error, must be a Standard Webhooks secret",
    ),
    (
        "bad-webhook-secret-via-env",
        CONNECTOR.format(secret=WEBHOOK_SECRET),
        {"LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__SECRET": "whsec_"},
        "connectors[0].secret: Value error, must be a Standard Webhooks secret",
    ),
    (
        "env-names-a-connector-not-in-the-file",
        CONNECTOR.format(secret=WEBHOOK_SECRET),
        {"LANCE_BRIDGE_CONNECTORS__HUBSPOT__ACCESS_TOKEN": "x"},
        "LANCE_BRIDGE_CONNECTORS__HUBSPOT__ACCESS_TOKEN: no connector named 'hubspot'",
    ),
    (
        "env-names-a-connector-without-a-file",
        None,
        {"LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__SECRET": WEBHOOK_SECRET},
        "LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__SECRET: no connector named 'ops_webhook'",
    ),
]


@pytest.mark.parametrize(
    ("text", "env", "expected"), [pytest.param(*case, id=name) for name, *case in ERROR_CASES]
)
def test_a_bad_config_is_one_line_naming_the_key(
    tmp_path: Path, text: str | None, env: dict[str, str], expected: str
) -> None:
    message = _error(tmp_path, text, env)
    assert expected in message
    for secret in SECRETS:
        assert secret not in message


def test_a_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "bridge.toml"
    with pytest.raises(errors.ConfigError) as caught:
        settings.load(missing, environ={})
    assert caught.value.message.startswith(f"{missing}: no such config file")


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        settings.load(tmp_path, environ={})
    assert caught.value.message.startswith(f"{tmp_path}: cannot read")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[poll\ninterval_seconds = 2\n", id="unclosed-table"),
        pytest.param(f'[lance]\ntoken = "{LANCE_TOKEN}\n', id="unterminated-secret"),
        pytest.param(f"[lance]\ntoken = {LANCE_TOKEN}\n", id="unquoted-secret"),
        pytest.param("[poll]\ninterval_seconds = 2\ninterval_seconds = 3\n", id="duplicate-key"),
    ],
)
def test_invalid_toml_names_the_file_and_never_the_secret(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text, name="broken.toml")
    with pytest.raises(errors.ConfigError) as caught:
        settings.load(path, environ={})
    message = caught.value.message
    assert message.startswith(f"{path}: invalid TOML")
    assert "line " in message  # where to look
    assert "\n" not in message
    assert LANCE_TOKEN not in message


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        FULL,
        {"LANCE_BRIDGE_CONNECTORS__OPS_WEBHOOK__SECRET": OTHER_WEBHOOK_SECRET},
    )
    assert _hook_secret(loaded) == OTHER_WEBHOOK_SECRET  # the secrets really are loaded
    shown = [
        repr(loaded),
        str(loaded),
        repr(loaded.lance),
        repr(loaded.server),
        repr(loaded.connectors),
        str(loaded.connectors[0]),
        loaded.model_dump_json(),
        str(loaded.model_dump()),
    ]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text


@pytest.mark.parametrize(
    ("text", "env"),
    [
        pytest.param(FULL + "\n[extra]\nx = 1\n", {}, id="unknown-key-beside-secrets"),
        pytest.param(FULL, {"LANCE_BRIDGE_POLL__INTERVAL_SECONDS": "-2"}, id="bad-value"),
        pytest.param(
            None, {"LANCE_BRIDGE_LANCE__TOKEN": f'["{LANCE_TOKEN}"]'}, id="token-as-json-list"
        ),
        pytest.param(
            None, {"LANCE_BRIDGE_SERVER__API_TOKENS": f'{{"a": "{API_TOKEN}"}}'}, id="tokens-dict"
        ),
        pytest.param(
            FULL.replace("[server]", f'[server]\npublic_url = ["{API_TOKEN}"]'),
            {},
            id="secret-in-a-wrong-type",
        ),
        pytest.param(CONNECTOR.format(secret=UNUSABLE_SECRET), {}, id="unusable-webhook-secret"),
        pytest.param(
            CONNECTOR.format(secret=WEBHOOK_SECRET),
            {"LANCE_BRIDGE_CONNECTORS__NOPE__SECRET": WEBHOOK_SECRET},
            id="env-secret-for-unknown-connector",
        ),
    ],
)
def test_secrets_never_appear_in_config_errors(
    tmp_path: Path, text: str | None, env: dict[str, str]
) -> None:
    message = _error(tmp_path, text, env)
    for secret in SECRETS:
        assert secret not in message
    assert UNUSABLE_SECRET.removeprefix("whsec_") not in message


@pytest.mark.parametrize(
    ("text", "env"),
    [
        pytest.param('[server]\napi_tokens = [""]\n', {}, id="file"),
        pytest.param(None, {"LANCE_BRIDGE_SERVER__API_TOKENS": '["ok", ""]'}, id="env-json"),
    ],
)
def test_an_empty_api_token_is_refused(
    tmp_path: Path, text: str | None, env: dict[str, str]
) -> None:
    assert "server.api_tokens" in _error(tmp_path, text, env)


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("abc", id="no-prefix"),
        pytest.param("not-a-secret", id="not-base64"),
        pytest.param("whsec_" + base64.b64encode(b"short").decode(), id="5-bytes"),
    ],
)
def test_a_weak_or_malformed_webhook_secret_is_refused(tmp_path: Path, secret: str) -> None:
    message = _error(tmp_path, CONNECTOR.format(secret=secret))
    assert "connectors[0].secret" in message
