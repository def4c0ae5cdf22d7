"""Settings from defaults, YAML, environment and flags, in that order of precedence."""

from __future__ import annotations

import re
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


def test_upstreams_from_yaml_and_from_the_environment(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "proxy:\n  connect_timeout_s: 2.5\n  upstreams:\n"
        "    - {prefix: docker.io, aliases: [dockerhub], url: https://registry-1.docker.io, mirror: true}\n"
    )
    s = load_settings(str(path), env={})
    (upstream,) = s.proxy.upstreams
    assert (upstream.prefix, upstream.namespaces, upstream.mirror, upstream.tag_ttl) == (
        "docker.io",
        ["docker.io", "dockerhub"],
        True,
        "5m",
    )
    assert s.proxy.connect_timeout_s == 2.5
    env = {"REGISTRY_PROXY_UPSTREAMS": "[{prefix: ghcr.io, url: 'https://ghcr.io', password_env: GHCR_TOKEN}]"}
    (upstream,) = load_settings(env=env).proxy.upstreams
    assert (upstream.prefix, upstream.password_env) == ("ghcr.io", "GHCR_TOKEN")


@pytest.mark.parametrize(
    ("upstreams", "message"),
    [
        ([{"prefix": "up", "url": "ftp://x"}], r"upstreams\[0\]\.url: an http:// or https:// URL"),
        ([{"prefix": "Up/x", "url": "http://x"}], "is not one name component"),
        ([{"prefix": "a", "url": "http://x"}, {"prefix": "b", "aliases": ["a"], "url": "http://y"}], "is taken"),
        ([{"prefix": "a", "url": "http://x", "hosts": ["h"]}, {"prefix": "b", "url": "http://y", "hosts": ["h"]}], "h"),
        ([{"prefix": "a", "url": "http://x", "tag_ttl": "soon"}], r"tag_ttl: not a duration"),
        ([{"prefix": "a", "url": "http://x", "password": "p", "password_env": "P"}], "one of password"),
        (
            [{"prefix": "a", "url": "http://x", "mirror": True}, {"prefix": "b", "url": "http://y", "mirror": True}],
            "one",
        ),
    ],
)
def test_bad_upstreams_name_the_setting(upstreams: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, overrides={"proxy": {"upstreams": upstreams}})


def test_float_settings_take_numbers_and_refuse_words() -> None:
    assert load_settings(env={"REGISTRY_PROXY_READ_TIMEOUT_S": "12.5"}).proxy.read_timeout_s == 12.5
    with pytest.raises(ConfigError, match=r"proxy\.read_timeout_s: expected float"):
        load_settings(env={"REGISTRY_PROXY_READ_TIMEOUT_S": "slow"})


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"REGISTRY_METRICS_TOKEN": "a", "REGISTRY_METRICS_TOKEN_FILE": "/f"}, "metrics: one of token and token_file"),
        ({"REGISTRY_METRICS_LISTEN": "9100"}, "metrics.listen: host:port"),
        ({"REGISTRY_METRICS_LISTEN": "127.0.0.1:http"}, "metrics.listen: host:port"),
        ({"REGISTRY_METRICS_LISTEN": "127.0.0.1:70000"}, "metrics.listen: host:port"),
        ({"REGISTRY_METRICS_INDEX_REFRESH_S": "0"}, "metrics.index_refresh_s"),
    ],
)
def test_bad_metrics_settings_are_named(variables: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=variables)


def test_metrics_settings_from_the_environment() -> None:
    settings = load_settings(env={"REGISTRY_METRICS_LISTEN": "[::1]:9100", "REGISTRY_METRICS_ENABLED": "false"})
    assert (settings.metrics.listen, settings.metrics.enabled, settings.metrics.token) == ("[::1]:9100", False, None)


def test_log_format_and_read_only_from_file_and_environment(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("log:\n  format: json\nmaintenance:\n  read_only: true\n")
    s = load_settings(str(path), env={})
    assert (s.log.format, s.maintenance.read_only) == ("json", True)
    s = load_settings(env={"REGISTRY_LOG_FORMAT": "text", "REGISTRY_MAINTENANCE_READ_ONLY": "false"})
    assert (s.log.format, s.maintenance.read_only) == ("text", False)
    assert (load_settings(env={}).log.format, load_settings(env={}).maintenance.read_only) == ("text", False)
    with pytest.raises(ConfigError, match=r"log\.format"):
        load_settings(env={"REGISTRY_LOG_FORMAT": "xml"})


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ("[{name: a, url: ftp://x}]", "events.endpoints[0].url"),
        ("[{name: '', url: 'http://x'}]", "events.endpoints[0].name"),
        ("[{name: a, url: 'http://x'}, {name: a, url: 'http://y'}]", "names another endpoint"),
        ("[{name: a, url: 'http://x', timeout: soon}]", "events.endpoints[0].timeout"),
        ("[{name: a, url: 'http://x', timeout: 0}]", "more than 0"),
        ("[{name: a, url: 'http://x', backoff: 10s, backoff_max: 1s}]", "backoff_max: at least backoff"),
        ("[{name: a, url: 'http://x', ignore: {actions: [push, fetch]}}]", "ignore.actions: fetch"),
    ],
)
def test_event_endpoints_are_checked(endpoints: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(env={"REGISTRY_EVENTS_ENDPOINTS": endpoints})


def test_event_endpoints_from_the_environment() -> None:
    settings = load_settings(
        env={
            "REGISTRY_EVENTS_ENDPOINTS": "[{name: ci, url: 'https://ci.example/hook', "
            "headers: {Authorization: Bearer x}}]",
            "REGISTRY_EVENTS_PULLS": "true",
        }
    )
    (endpoint,) = settings.events.endpoints
    assert endpoint.headers == {"Authorization": ["Bearer x"]} and endpoint.backoff == "1s"
    assert settings.events.pulls is True
