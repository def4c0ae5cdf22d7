"""Settings: defaults, then a YAML file, then `REGISTRY_*` environment variables, then flags.

Every leaf setting `a.b_c` can be set by the environment variable `REGISTRY_A_B_C`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from registry.rule_syntax import make_rule


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass
class HttpSettings:
    host: str = "0.0.0.0"
    port: int = 5000
    tls_certificate: str | None = None  # PEM certificate chain: serve HTTPS
    tls_key: str | None = None  # its PEM private key
    workers: int = 0  # processes serving requests; 0: one per CPU core
    server: str = "granian"  # the ASGI server: granian or uvicorn (README, "How it serves")
    # Proxies (CIDRs) whose X-Forwarded-For names the client: the right-most address not one of them counts
    trusted_proxies: list[str] = field(default_factory=list)
    # Connection limits (README, "Connection limits"). Every open connection costs a file descriptor and up
    # to max_header_bytes of memory while its request head arrives.
    max_connections: int = 8192  # served at once over all workers; more wait in the backlog, then are refused
    backlog: int = 2048  # connections the kernel queues until a worker takes them (capped by net.core.somaxconn)
    header_timeout_s: int = 10  # a request head must arrive in full within this, else the connection closes
    max_header_bytes: int = 64 << 10  # request heads: this much unfinished gets 431 (granian: also its read buffer)
    keep_alive_s: int = 30  # uvicorn: an idle keep-alive connection closes after this (granian: header_timeout_s)
    http2: bool = False  # granian: also serve HTTP/2; then a connection that sends nothing is never timed out


@dataclass
class S3Settings:
    bucket: str | None = None  # setting it selects the S3 driver
    endpoint: str | None = None  # e.g. http://127.0.0.1:9000 for MinIO or SeaweedFS; AWS when unset
    region: str | None = None
    prefix: str = ""  # every key under this prefix, e.g. prod/
    redirect: bool = False  # blob GETs answer 307 to a presigned URL, so bytes flow from the store
    redirect_expiry_s: int = 1200
    max_connections: int = 64  # connection pool (and thread pool) of each process


@dataclass
class StorageSettings:
    driver: str | None = None  # local | memory | s3; default s3 when s3.bucket is set, else local
    root: str | None = None  # local driver: default <data_dir>/storage
    delete_enabled: bool = True  # DELETE of blobs, manifests and tags; off answers 405
    s3: S3Settings = field(default_factory=S3Settings)

    @property
    def kind(self) -> str:
        return self.driver or ("s3" if self.s3.bucket else "local")


@dataclass
class IndexSettings:
    url: str | None = None  # default sqlite:///<data_dir>/index.db


@dataclass
class ManifestSettings:
    max_bytes: int = 4 << 20
    cache_bytes: int = 32 << 20  # memory each worker keeps manifests in (bytes, keys, table); 0: no cache


@dataclass
class RuleSettings:
    """One access rule; see registry/rule_syntax.py for the meaning of each field."""

    who: list[str] = field(default_factory=list)
    repository: str = ""
    actions: list[str] = field(default_factory=list)


@dataclass
class IssuerSettings:
    """An external token issuer we trust, by its certificate bundle or its JWKS file."""

    issuer: str = ""
    certificates: str | None = None
    jwks: str | None = None


@dataclass
class TokenSettings:
    path: str = "/auth/token"  # where the built-in token server answers
    realm: str | None = None  # token URL in challenges; default this server's `path`
    service: str = "registry"  # the audience of tokens (the token spec calls it service)
    issuer: str = "registry-token-issuer"
    algorithm: str = "ES256"  # ES256 or RS256
    key: str | None = None  # PEM private key; default <data_dir>/token-key.pem, generated
    expiry_s: int = 300
    refresh_expiry_s: int = 30 * 24 * 3600
    issuers: list[IssuerSettings] = field(default_factory=list)


@dataclass
class AuthSettings:
    mode: str = "none"  # none | htpasswd | token
    htpasswd: str | None = None  # default <data_dir>/htpasswd
    realm: str = "registry"  # the realm of HTTP Basic challenges
    groups: dict[str, list[str]] = field(default_factory=dict)
    rules: list[RuleSettings] = field(default_factory=lambda: [RuleSettings(who=["*"], repository="**", actions=["*"])])
    login_attempts: int = 5  # failed logins per user and address ...
    login_window_s: int = 60  # ... within this many seconds before 429
    login_attempts_per_address: int = 50  # failed logins from one address, whatever the user, in the window
    login_attempts_per_user: int = 20  # failed logins for one user over all addresses, each counting up to
    # login_attempts: more than login_attempts, so no single address can lock a user out for everyone
    password_threads: int = 2  # threads checking bcrypt hashes, apart from those reading files
    password_queue: int = 32  # checks waiting for those threads; beyond it, 429 with Retry-After
    token: TokenSettings = field(default_factory=TokenSettings)


@dataclass
class GcSettings:
    interval: str = "0"  # how often the server runs a full collection itself (e.g. 6h); 0: never
    grace: str = "1h"  # what was pushed, mounted or touched this recently is always kept
    reviews: bool = True  # every worker collects what changes queued for review (incremental collection)
    poll: str = "10s"  # how often an idle worker looks for due reviews
    delete_untagged: bool = False  # the incremental collector also removes manifests no tag reaches
    rest: float = 0.5  # a collector rests after each transaction of reviews this many times as long as it took


@dataclass
class UploadSettings:
    purge_after: str = "24h"  # uploads untouched this long are abandoned: the collector deletes them


@dataclass
class UpstreamSettings:
    """One upstream registry the pull-through cache serves (README, "CI image cache")."""

    prefix: str = ""  # the namespace of its cache here: HOST/<prefix>/<name> is <name> upstream
    aliases: list[str] = field(default_factory=list)  # more prefixes for the same upstream (e.g. dockerhub)
    url: str = ""  # e.g. https://registry-1.docker.io
    hosts: list[str] = field(default_factory=list)  # registry hosts it stands for (containerd's ?ns=); default [prefix]
    mirror: bool = False  # Docker's registry-mirrors: unprefixed names without a local repository come from it
    username: str | None = None
    password: str | None = None
    password_file: str | None = None  # a file holding the password
    password_env: str | None = None  # an environment variable holding the password
    tag_ttl: str = "5m"  # a cached tag is served without asking the upstream while younger than this
    max_bytes: int = 0  # cap of this upstream's cached bytes (0: none), enforced by the collector

    @property
    def namespaces(self) -> list[str]:
        """Every prefix of its cache here."""
        return [self.prefix, *self.aliases]


@dataclass
class ProxySettings:
    upstreams: list[UpstreamSettings] = field(default_factory=list)
    max_bytes: int = 0  # cap of the cached bytes of every upstream together (0: none), enforced by the collector
    connect_timeout_s: float = 5.0  # an upstream that does not accept a connection within this is unreachable
    read_timeout_s: float = 30.0  # ... or that sends nothing for this long


@dataclass
class UiSettings:
    """The web UI (registry/ui/), served under /ui/."""

    enabled: bool = True  # false: no /ui/ at all (404), and / redirects nowhere
    session_s: int = 12 * 3600  # a sign-in lasts this long


@dataclass
class MetricsSettings:
    """Prometheus metrics at /metrics (README, "Metrics")."""

    enabled: bool = True
    listen: str | None = None  # host:port of a listener of its own (then not on the API port)
    token: str | None = None  # a scrape must send `Authorization: Bearer <token>`
    token_file: str | None = None  # a file holding that token
    index_refresh_s: float = 30.0  # how often each worker reads the index figures


@dataclass
class EventIgnoreSettings:
    actions: list[str] = field(default_factory=list)  # push, pull, delete, mount: never sent to this endpoint
    media_types: list[str] = field(default_factory=list)  # events whose target has one of these media types


@dataclass
class EventEndpointSettings:
    """One webhook that receives the registry's events (README, "Events (webhooks)")."""

    name: str = ""  # letters, digits, `.`, `_`, `-`; names its queue in the index
    url: str = ""  # http:// or https://, POSTed envelopes of events
    headers: dict[str, list[str]] = field(default_factory=dict)  # sent with each POST (a value or a list)
    timeout: str = "5s"  # a POST not answered within this failed
    backoff: str = "1s"  # the wait after the first failed POST, doubling ...
    backoff_max: str = "5m"  # ... up to this
    ignore: EventIgnoreSettings = field(default_factory=EventIgnoreSettings)


@dataclass
class EventsSettings:
    endpoints: list[EventEndpointSettings] = field(default_factory=list)
    pulls: bool = False  # also report manifest and blob GETs (many events)


@dataclass
class LogSettings:
    level: str = "info"
    access: bool = True  # one line per request
    format: str = "text"  # text: one plain line per event; json: one JSON object per line (README, "Logs")


@dataclass
class MaintenanceSettings:
    """Switches for maintenance (README, "Read-only mode")."""

    read_only: bool = False  # pulls work; every write answers 405 UNSUPPORTED, and nothing stored changes


@dataclass
class Settings:
    data_dir: str = "./data"
    http: HttpSettings = field(default_factory=HttpSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    manifests: ManifestSettings = field(default_factory=ManifestSettings)
    log: LogSettings = field(default_factory=LogSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    gc: GcSettings = field(default_factory=GcSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    ui: UiSettings = field(default_factory=UiSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    events: EventsSettings = field(default_factory=EventsSettings)

    @property
    def storage_root(self) -> str:
        return self.storage.root or os.path.join(self.data_dir, "storage")

    @property
    def index_url(self) -> str:
        return self.index.url or f"sqlite:///{os.path.join(self.data_dir, 'index.db')}"

    @property
    def htpasswd_path(self) -> str:
        return self.auth.htpasswd or os.path.join(self.data_dir, "htpasswd")

    @property
    def token_key_path(self) -> str:
        return self.auth.token.key or os.path.join(self.data_dir, "token-key.pem")

    @property
    def ui_key_path(self) -> str:
        """The key signing the web UI's session cookies, generated on first use."""
        return os.path.join(self.data_dir, "ui-session-key")


# One component of a repository name (registry/names.py has the whole grammar; config stays a leaf).
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> float:
    """Seconds in a duration such as `90`, `30s`, `15m`, `1h`, `7d`; raises ValueError."""
    text = value.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:])
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"not a duration: {value!r} (say 90, 30s, 15m, 1h or 7d)") from None
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return seconds


def _leaf_type(hint: Any) -> type:
    """The concrete type of a leaf field (`int | None` -> int)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if not isinstance(hint, type):
        raise TypeError(f"not a type a setting can have: {hint!r}")
    return hint


def _convert(value: Any, hint: Any, where: str) -> Any:
    if value is None and type(None) in typing.get_args(hint):
        return None
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ConfigError(f"{where}: expected a list")
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        return {str(k): _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        target = hint()
        _apply(target, value, f"{where}.")
        return target
    kind = _leaf_type(hint)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")


def _apply(target: Any, values: Mapping[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(target))
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{where}{key}: unknown setting")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{key}: expected a mapping")
            _apply(current, value, f"{where}{key}.")
        else:
            setattr(target, key, _convert(value, hints[key], f"{where}{key}"))


def _environment(target: Any, env: Mapping[str, str], prefix: str = "REGISTRY") -> dict[str, Any]:
    """The settings that environment variables name, as a nested mapping."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(target):
        name = f"{prefix}_{f.name.upper()}"
        current = getattr(target, f.name)
        if dataclasses.is_dataclass(current):
            nested = _environment(current, env, name)
            if nested:
                found[f.name] = nested
        elif name in env:
            # Lists and mappings are written in YAML: REGISTRY_AUTH_GROUPS='{admins: [alice]}'.
            structured = isinstance(current, list | dict)
            found[f.name] = _parse_yaml(env[name], name) if structured else env[name]
    return found


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {e}") from None


def load_settings(
    path: str | None = None, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Settings from the YAML file at `path` (optional), `env` (default os.environ) and `overrides`
    (a nested mapping, as from command-line flags). Raises ConfigError naming the bad setting."""
    settings = Settings()
    if path is not None:
        try:
            with open(path) as f:
                document = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(document, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping")
        _apply(settings, document, "")
    _apply(settings, _environment(settings, os.environ if env is None else env), "")
    if overrides:
        _apply(settings, overrides, "")
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    if settings.http.server not in ("uvicorn", "granian"):
        raise ConfigError(f"http.server: {settings.http.server!r} is not uvicorn or granian")
    if settings.http.workers < 0:
        raise ConfigError("http.workers: 0 (one per core) or more")
    if settings.http.max_connections < 1 or settings.http.backlog < 1:
        raise ConfigError("http.max_connections and http.backlog: 1 or more")
    if settings.http.max_header_bytes < 8192:
        raise ConfigError("http.max_header_bytes: 8192 or more")
    if settings.http.header_timeout_s <= 0 or settings.http.keep_alive_s <= 0:
        raise ConfigError("http.header_timeout_s and http.keep_alive_s: more than 0 seconds")
    for where, value in (
        ("gc.interval", settings.gc.interval),
        ("gc.grace", settings.gc.grace),
        ("gc.poll", settings.gc.poll),
        ("uploads.purge_after", settings.uploads.purge_after),
    ):
        try:
            parse_duration(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    if parse_duration(settings.gc.poll) <= 0 or settings.gc.rest < 0:
        raise ConfigError("gc.poll: more than 0 seconds; gc.rest: 0 or more")
    if (settings.http.tls_certificate is None) != (settings.http.tls_key is None):
        raise ConfigError("http.tls_certificate and http.tls_key go together")
    if settings.storage.kind not in ("local", "memory", "s3"):
        raise ConfigError(f"storage.driver: unknown driver {settings.storage.driver!r} (local, memory, s3)")
    if settings.storage.kind == "s3" and not settings.storage.s3.bucket:
        raise ConfigError("storage.s3.bucket: the S3 driver needs a bucket")
    for proxy in settings.http.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"http.trusted_proxies: {proxy!r} is not an address or CIDR") from None
    auth = settings.auth
    if min(auth.login_attempts, auth.login_window_s, auth.password_threads, auth.password_queue) < 1:
        raise ConfigError("auth.login_attempts, login_window_s, password_threads, password_queue: 1 or more")
    if auth.login_attempts_per_user <= auth.login_attempts or auth.login_attempts_per_address < auth.login_attempts:
        raise ConfigError("auth.login_attempts_per_user: more than login_attempts; per_address: at least as many")
    if settings.auth.mode not in ("none", "htpasswd", "token"):
        raise ConfigError(f"auth.mode: unknown mode {settings.auth.mode!r} (none, htpasswd, token)")
    if settings.auth.token.algorithm not in ("ES256", "RS256"):
        raise ConfigError("auth.token.algorithm: ES256 or RS256")
    if not settings.auth.token.path.startswith("/") or settings.auth.token.path.startswith("/v2"):
        raise ConfigError("auth.token.path: an absolute path outside /v2/")
    for i, rule in enumerate(settings.auth.rules):
        try:
            make_rule(rule.who, rule.repository, rule.actions)
        except ValueError as e:
            raise ConfigError(f"auth.rules[{i}]: {e}") from None
    for i, issuer in enumerate(settings.auth.token.issuers):
        if not issuer.issuer or (issuer.certificates is None) == (issuer.jwks is None):
            raise ConfigError(f"auth.token.issuers[{i}]: needs issuer and one of certificates or jwks")
    if settings.ui.session_s < 1:
        raise ConfigError("ui.session_s: 1 or more seconds")
    if settings.log.format not in ("text", "json"):
        raise ConfigError(f"log.format: {settings.log.format!r} is not text or json")
    _check_proxy(settings.proxy)
    _check_events(settings.events)
    _check_metrics(settings.metrics)


def _check_metrics(metrics: MetricsSettings) -> None:
    if metrics.token is not None and metrics.token_file is not None:
        raise ConfigError("metrics: one of token and token_file")
    if metrics.index_refresh_s <= 0:
        raise ConfigError("metrics.index_refresh_s: more than 0 seconds")
    if metrics.listen is not None:
        host, _, port = metrics.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"metrics.listen: host:port, got {metrics.listen!r}")


def _check_proxy(proxy: ProxySettings) -> None:
    if proxy.max_bytes < 0 or proxy.connect_timeout_s <= 0 or proxy.read_timeout_s <= 0:
        raise ConfigError("proxy.max_bytes: 0 or more; proxy.connect_timeout_s, read_timeout_s: more than 0")
    prefixes: set[str] = set()
    hosts: set[str] = set()
    for i, upstream in enumerate(proxy.upstreams):
        where = f"proxy.upstreams[{i}]"
        if not upstream.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url: an http:// or https:// URL, got {upstream.url!r}")
        for prefix in upstream.namespaces:
            if not _COMPONENT.fullmatch(prefix):
                raise ConfigError(f"{where}: the prefix {prefix!r} is not one name component (e.g. docker.io, ghcr)")
            if prefix in prefixes:
                raise ConfigError(f"{where}: the prefix {prefix!r} is taken by another upstream")
            prefixes.add(prefix)
        for host in upstream.hosts:
            if host in hosts:
                raise ConfigError(f"{where}.hosts: {host!r} is named by another upstream")
            hosts.add(host)
        try:
            parse_duration(upstream.tag_ttl)
        except ValueError as e:
            raise ConfigError(f"{where}.tag_ttl: {e}") from None
        if upstream.max_bytes < 0:
            raise ConfigError(f"{where}.max_bytes: 0 or more")
        if sum(x is not None for x in (upstream.password, upstream.password_file, upstream.password_env)) > 1:
            raise ConfigError(f"{where}: one of password, password_file and password_env")
    if sum(u.mirror for u in proxy.upstreams) > 1:
        raise ConfigError("proxy.upstreams: mirror may be true on one upstream only")


EVENT_ACTIONS = ("push", "pull", "delete", "mount")
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _check_events(events: EventsSettings) -> None:
    names: set[str] = set()
    for i, endpoint in enumerate(events.endpoints):
        where = f"events.endpoints[{i}]"
        if not _ENDPOINT_NAME.fullmatch(endpoint.name):
            raise ConfigError(f"{where}.name: 1-64 letters, digits, '.', '_' or '-', got {endpoint.name!r}")
        if endpoint.name in names:
            raise ConfigError(f"{where}.name: {endpoint.name!r} names another endpoint too")
        names.add(endpoint.name)
        if not endpoint.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url: an http:// or https:// URL, got {endpoint.url!r}")
        durations = {}
        for key in ("timeout", "backoff", "backoff_max"):
            try:
                durations[key] = parse_duration(getattr(endpoint, key))
            except ValueError as e:
                raise ConfigError(f"{where}.{key}: {e}") from None
            if durations[key] <= 0:
                raise ConfigError(f"{where}.{key}: more than 0 seconds")
        if durations["backoff_max"] < durations["backoff"]:
            raise ConfigError(f"{where}.backoff_max: at least backoff")
        unknown = sorted(set(endpoint.ignore.actions) - set(EVENT_ACTIONS))
        if unknown:
            raise ConfigError(f"{where}.ignore.actions: {', '.join(unknown)} (actions are {', '.join(EVENT_ACTIONS)})")


def as_dict(settings: Settings) -> dict[str, Any]:
    """The settings as plain data (for `registry config check`, and for worker processes)."""
    return dataclasses.asdict(settings)


def from_dict(data: Mapping[str, Any]) -> Settings:
    """Settings from what `as_dict` gave (no file, no environment)."""
    return load_settings(env={}, overrides=data)
