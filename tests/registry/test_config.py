"""Settings from defaults, YAML, environment and flags, in that order of precedence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from registry.config import ConfigError, load_settings


def test_defaults_need_no_file() -> None:
    s = load_settings(env={})
    assert (s.http.host, s.http.port, s.data_dir) == ("0.0.0.0", 5000, "./data")
    assert s.index_url == "sqlite:///./data/index.db"
    assert s.storage_root == "./data/storage"


def test_file_then_environment_then_flags(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("http:\n  port: 6000\n  host: 127.0.0.1\nstorage:\n  delete_enabled: false\n")
    s = load_settings(str(path), env={"REGISTRY_HTTP_PORT": "7000", "REGISTRY_DATA_DIR": "/srv/r"})
    assert (s.http.host, s.http.port, s.data_dir, s.storage.delete_enabled) == ("127.0.0.1", 7000, "/srv/r", False)
    s = load_settings(str(path), env={"REGISTRY_HTTP_PORT": "7000"}, overrides={"http": {"port": 8000}})
    assert s.http.port == 8000


def test_environment_booleans() -> None:
    assert load_settings(env={"REGISTRY_STORAGE_DELETE_ENABLED": "off"}).storage.delete_enabled is False
    assert load_settings(env={"REGISTRY_LOG_ACCESS": "true"}).log.access is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http:\n  prot: 1\n", "http.prot: unknown setting"),
        ("http:\n  port: many\n", "http.port: expected int"),
        ("http: 5\n", "http: expected a mapping"),
        ("storage:\n  driver: tape\n", "unknown driver"),
        ("- a\n", "top level must be a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_files_name_the_setting(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_settings(str(path), env={})


def test_bad_environment_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"http\.port"):
        load_settings(env={"REGISTRY_HTTP_PORT": "x"})


def test_example_config_is_valid() -> None:
    s = load_settings("config.example.yaml", env={})
    assert s.http.port == 5000
    assert s.auth.mode == "token" and len(s.auth.rules) == 4


def test_lists_and_mappings_from_yaml_and_environment(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("auth:\n  rules:\n    - {who: alice, repository: '**', actions: [pull]}\n")
    s = load_settings(str(path), env={"REGISTRY_AUTH_GROUPS": "{admins: [alice, bob]}"})
    assert s.auth.rules[0].who == ["alice"] and s.auth.rules[0].actions == ["pull"]
    assert s.auth.groups == {"admins": ["alice", "bob"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("auth:\n  mode: ldap\n", "auth.mode"),
        ("auth:\n  rules:\n    - {who: '*', repository: '**', actions: [write]}\n", r"auth.rules\[0\]"),
        ("auth:\n  rules: 5\n", "expected a list"),
        ("auth:\n  token:\n    issuers:\n      - {issuer: x}\n", "certificates or jwks"),
        ("auth:\n  token:\n    path: /v2/token\n", "auth.token.path"),
    ],
)
def test_bad_auth_settings_are_named(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(str(path), env={})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REGISTRY_HTTP_MAX_CONNECTIONS", "0", "http.max_connections"),
        ("REGISTRY_HTTP_BACKLOG", "0", "http.backlog"),
        ("REGISTRY_HTTP_MAX_HEADER_BYTES", "4096", "http.max_header_bytes"),
        ("REGISTRY_HTTP_HEADER_TIMEOUT_S", "0", "http.header_timeout_s"),
        ("REGISTRY_HTTP_KEEP_ALIVE_S", "0", "http.keep_alive_s"),
    ],
)
def test_connection_limits_that_cannot_work_are_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env={variable: value})


def test_config_depends_on_no_other_part_of_the_registry() -> None:
    """Settings are read before anything is built from them: `registry.config` imports only the rule syntax."""
    code = "import sys, registry.config; print(sorted(m for m in sys.modules if m.startswith(('registry', 'storage'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['registry', 'registry.config', 'registry.rule_syntax']"
