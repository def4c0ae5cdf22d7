"""Which repository names are caches of which upstream: by prefix, by containerd's `?ns=` parameter,
and, for Docker's `registry-mirrors` setting, unprefixed names that have no repository here."""

from __future__ import annotations

from dataclasses import dataclass

from registry.config import ProxySettings, parse_duration
from registry.proxy.upstream import Tally, Upstream

DOCKER_HUB_HOSTS = ("docker.io", "registry-1.docker.io", "index.docker.io")


@dataclass(frozen=True, slots=True)
class Cached:
    """An upstream cached here: its client, prefix (where its repositories live here) and tag TTL."""

    upstream: Upstream
    prefix: str
    tag_ttl_s: float
    max_bytes: int
    prefixes: tuple[str, ...]  # the prefix and its aliases
    mirror: bool

    def remote_name(self, name: str) -> str:
        """The name upstream of `name` (the part after the prefix); Docker Hub's one-component names
        are `library/` ones."""
        if "/" not in name and any(h in DOCKER_HUB_HOSTS for h in self.upstream.hosts):
            return f"library/{name}"
        return name


@dataclass(frozen=True, slots=True)
class Route:
    """A request for a cache: the repository that holds it here, and its name upstream."""

    cached: Cached
    repository: str
    remote: str


class Routes:
    """The upstreams of `settings`, and how names reach them; their clients report to `tally`."""

    def __init__(self, settings: ProxySettings, tally: Tally | None = None):
        self.caches: list[Cached] = []
        self._by_prefix: dict[str, Cached] = {}
        self._by_host: dict[str, Cached] = {}
        self.mirror: Cached | None = None
        for upstream_settings in settings.upstreams:
            cached = Cached(
                Upstream(upstream_settings, settings.connect_timeout_s, settings.read_timeout_s, tally),
                upstream_settings.prefix,
                parse_duration(upstream_settings.tag_ttl),
                upstream_settings.max_bytes,
                tuple(upstream_settings.namespaces),
                upstream_settings.mirror,
            )
            self.caches.append(cached)
            self._by_prefix |= {prefix: cached for prefix in cached.prefixes}
            self._by_host |= {host: cached for host in cached.upstream.hosts}
            if cached.mirror:
                self.mirror = cached

    @property
    def prefixes(self) -> list[str]:
        """Every prefix of every cache."""
        return list(self._by_prefix)

    def by_prefix(self, name: str) -> Route | None:
        """The cache `name` is in by its first component. Every route to one upstream name reaches
        one repository here, `<prefix>/<name upstream>`, whatever alias or mirror it came through."""
        first, _, rest = name.partition("/")
        cached = self._by_prefix.get(first)
        if cached is None or not rest:
            return None
        remote = cached.remote_name(rest)
        return Route(cached, f"{cached.prefix}/{remote}", remote)

    def by_host(self, name: str, host: str | None) -> Route | None:
        """The cache containerd's `?ns=host` names for `name`."""
        cached = self._by_host.get(host) if host else None
        if cached is None:
            return None
        remote = cached.remote_name(name)
        return Route(cached, f"{cached.prefix}/{remote}", remote)

    def by_mirror(self, name: str) -> Route | None:
        """The mirror's cache of `name` (the caller checks that no repository here has that name)."""
        if self.mirror is None:
            return None
        remote = self.mirror.remote_name(name)
        return Route(self.mirror, f"{self.mirror.prefix}/{remote}", remote)

    async def close(self) -> None:
        for cached in self.caches:
            await cached.upstream.close()
