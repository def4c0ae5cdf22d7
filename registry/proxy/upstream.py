"""An upstream registry as the pull-through cache reads it: manifests and blobs over the registry API,
with its auth (anonymous, Basic, or the Docker token flow), bounded timeouts and blob redirects.

Every failure is one of three exceptions: UpstreamMissing (the upstream answered that it has no such
thing), UpstreamDenied (it refused our credentials) and UpstreamUnreachable (no usable answer: no
connection, a timeout, a 5xx, a broken body). Credentials never appear in a message or a log line, and
never follow a redirect (Docker Hub sends blob GETs to a CDN).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode, urljoin

import aiohttp

from registry.config import UpstreamSettings
from registry.errors import BlobUnknown, Denied, ManifestUnknown, RegistryError, Unavailable

log = logging.getLogger("registry.proxy")

# Every manifest type this registry stores, so the upstream never converts one for an old client.
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
PAUSE_AFTER_FAILURE_S = 3.0  # an upstream that could not be reached is not tried again for this long
TOKEN_LIFETIME_S = 60  # the token spec's default when a token server states none
CHUNK_BYTES = 256 << 10  # pieces of a manifest body read at once
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class UpstreamError(Exception):
    """An upstream could not give what was asked; `url` is the upstream's, for messages."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


class UpstreamMissing(UpstreamError):
    """The upstream answered 404: it has no such manifest, blob or repository."""


class UpstreamDenied(UpstreamError):
    """The upstream refused the credentials configured for it (401 or 403)."""


class UpstreamUnreachable(UpstreamError):
    """No usable answer: no connection, a timeout, a 5xx, or a body cut short."""


class Tally(Protocol):
    """What an upstream client reports (for metrics): bytes of manifests and blobs it fetched, and its
    failures, each with the upstream's URL."""

    def fetched(self, upstream: str, size: int) -> None: ...

    def failed(self, upstream: str, error: UpstreamError) -> None: ...


class Untallied:
    """A Tally that keeps nothing."""

    def fetched(self, upstream: str, size: int) -> None:
        pass

    def failed(self, upstream: str, error: UpstreamError) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest as the upstream sent it."""

    body: bytes
    media_type: str
    digest: str | None  # its Docker-Content-Digest header, when sent


class BlobStream:
    """The body of an upstream blob GET, read once; `size` is its Content-Length when sent."""

    def __init__(self, url: str, response: aiohttp.ClientResponse, tally: Tally):
        self._url, self._response, self._tally = url, response, tally
        self.size: int | None = response.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes as they arrive; raises UpstreamUnreachable when the body breaks off."""
        try:
            async for chunk in self._response.content.iter_any():
                self._tally.fetched(self._url, len(chunk))
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as e:
            error = UpstreamUnreachable(self._url, f"the blob's body broke off: {_describe(e)}")
            self._tally.failed(self._url, error)
            raise error from None

    def close(self) -> None:
        """Release the connection (it is dropped if the body was not read to its end)."""
        self._response.close()


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _password(settings: UpstreamSettings) -> str | None:
    if settings.password_file is not None:
        with open(settings.password_file) as f:
            return f.read().strip()
    if settings.password_env is not None:
        return os.environ.get(settings.password_env)
    return settings.password


class Upstream:
    """One upstream registry (`settings.url`), with its own connection pool and token cache.

    Open it inside the event loop that uses it; `close()` releases its connections. Its fetched bytes
    and failures are reported to `tally`.
    """

    def __init__(
        self, settings: UpstreamSettings, connect_timeout_s: float, read_timeout_s: float, tally: Tally | None = None
    ):
        self.url = settings.url.rstrip("/")
        self._tally = tally or Untallied()
        self.hosts = settings.hosts or [settings.prefix]
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        password = _password(settings)
        self._basic: str | None = None
        if settings.username is not None:
            credentials = f"{settings.username}:{password or ''}".encode()
            self._basic = "Basic " + base64.b64encode(credentials).decode()
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (Authorization header, expires at)
        self._scheme: str | None = None  # "bearer" or "basic" once a challenge named it
        self._session: aiohttp.ClientSession | None = None
        self._failed: tuple[float, str] | None = None  # when it last could not be reached, and why

    def __repr__(self) -> str:
        return f"Upstream({self.url!r})"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=60)
            # aiohttp's default read buffer (64 KiB) measured fastest: 4 MiB moved 256 MiB 25% slower.
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the registry API ---------------------------------------------------------------------------

    @contextmanager
    def _tallied(self) -> Iterator[None]:
        """Report the UpstreamError the block raises to the tally."""
        try:
            yield
        except UpstreamError as e:
            self._tally.failed(self.url, e)
            raise

    async def manifest_digest(self, name: str, reference: str) -> str | None:
        """The digest `reference` names upstream, from one HEAD (cheap: Docker Hub does not count
        it against the pull limit); None when the upstream does not say."""
        with self._tallied():
            response = await self._call("HEAD", f"/v2/{name}/manifests/{reference}", name, {"Accept": MANIFEST_ACCEPT})
        response.release()
        return response.headers.get("Docker-Content-Digest")

    async def manifest(self, name: str, reference: str, limit: int) -> Manifest:
        """The manifest `reference` names upstream (at most `limit` bytes, else UpstreamUnreachable)."""
        url = f"/v2/{name}/manifests/{reference}"
        with self._tallied():
            response = await self._call("GET", url, name, {"Accept": MANIFEST_ACCEPT})
            try:
                body = bytearray()
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    body += chunk
                    if len(body) > limit:
                        raise UpstreamUnreachable(self.url, f"the manifest {reference} is larger than {limit} bytes")
            except (aiohttp.ClientError, TimeoutError) as e:
                raise UpstreamUnreachable(self.url, f"the manifest's body broke off: {_describe(e)}") from None
            finally:
                response.release()
        self._tally.fetched(self.url, len(body))
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return Manifest(bytes(body), media_type, response.headers.get("Docker-Content-Digest"))

    async def blob_size(self, name: str, digest: str) -> int:
        """The size of blob `digest` upstream, from one HEAD (following redirects)."""
        with self._tallied():
            response = await self._follow("HEAD", f"/v2/{name}/blobs/{digest}", name)
        response.release()
        if response.content_length is None:
            raise UpstreamUnreachable(self.url, f"no Content-Length for blob {digest}")
        return response.content_length

    async def blob(self, name: str, digest: str) -> BlobStream:
        """Start reading blob `digest` (following redirects); the caller closes the stream."""
        with self._tallied():
            response = await self._follow("GET", f"/v2/{name}/blobs/{digest}", name)
        return BlobStream(self.url, response, self._tally)

    # -- HTTP, auth and redirects ---------------------------------------------------------------

    async def _follow(self, method: str, path: str, name: str) -> aiohttp.ClientResponse:
        """`_call`, then the redirects it answers, to any host, without our credentials."""
        response = await self._call(method, path, name, {}, redirects=True)
        for _ in range(MAX_REDIRECTS):
            if response.status not in REDIRECTS:
                return response
            location = urljoin(str(response.url), response.headers.get("Location", ""))
            response.release()
            response = await self._send(method, location, {})
            if response.status not in REDIRECTS:
                _raise_for_status(self.url, response, path)
        response.release()
        raise UpstreamUnreachable(self.url, f"more than {MAX_REDIRECTS} redirects for {path}")

    async def _call(
        self, method: str, path: str, name: str, headers: dict[str, str], redirects: bool = False
    ) -> aiohttp.ClientResponse:
        """`method` on `path` with the credentials the upstream asks for; raises UpstreamError unless
        it answers 2xx (or, with `redirects`, 3xx)."""
        scope = f"repository:{name}:pull"
        response = await self._send(method, self.url + path, headers | self._authorization(scope))
        if response.status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            if await self._answer(challenge, scope):
                response = await self._send(method, self.url + path, headers | self._authorization(scope))
        if not (redirects and 300 <= response.status < 400):
            _raise_for_status(self.url, response, path)
        return response

    async def _send(self, method: str, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """One request. After a failure to connect or a timeout, the upstream is not tried again for
        PAUSE_AFTER_FAILURE_S: the requests meanwhile fail at once instead of each waiting for a timeout."""
        if self._failed is not None and time.monotonic() - self._failed[0] < PAUSE_AFTER_FAILURE_S:
            raise UpstreamUnreachable(self.url, self._failed[1])
        try:
            return await self.session.request(method, url, headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            self._failed = (time.monotonic(), _describe(e))
            raise UpstreamUnreachable(self.url, _describe(e)) from None

    def _authorization(self, scope: str) -> dict[str, str]:
        if self._scheme == "bearer":
            token = self._tokens.get(scope)
            if token is not None and token[1] > time.monotonic():
                return {"Authorization": token[0]}
        elif self._scheme == "basic" and self._basic is not None:
            return {"Authorization": self._basic}
        return {}

    async def _answer(self, challenge: str, scope: str) -> bool:
        """Get what a 401's `challenge` asks for; False when we have nothing to answer it with."""
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            self._scheme = "basic"
            return self._basic is not None
        if scheme != "bearer":
            return False
        self._scheme = "bearer"
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            return False
        query = {"scope": scope} | ({"service": params["service"]} if "service" in params else {})
        headers = {} if self._basic is None else {"Authorization": self._basic}
        response = await self._send("GET", f"{realm}?{urlencode(query)}", headers)
        try:
            if response.status in (401, 403):
                raise UpstreamDenied(self.url, f"its token server refused our credentials for {scope}")
            if response.status != 200:
                raise UpstreamUnreachable(self.url, f"its token server answered {response.status}")
            answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise UpstreamUnreachable(self.url, f"its token server's answer is unusable: {_describe(e)}") from None
        finally:
            response.release()
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise UpstreamUnreachable(self.url, "its token server sent no token")
        lifetime = answer.get("expires_in")
        lifetime = lifetime if isinstance(lifetime, int) and lifetime > 0 else TOKEN_LIFETIME_S
        # Renewed a little early, so that a token never expires on its way.
        self._tokens[scope] = (f"Bearer {token}", time.monotonic() + lifetime * 0.9)
        return True


def _raise_for_status(url: str, response: aiohttp.ClientResponse, path: str) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    response.release()
    if status == 404:
        raise UpstreamMissing(url, f"{path} is not there")
    if status in (401, 403):
        raise UpstreamDenied(url, f"it refused access to {path} ({status})")
    if status == 429:
        raise UpstreamUnreachable(url, "it limits our requests now (429 Too Many Requests)")
    raise UpstreamUnreachable(url, f"it answered {status} for {path}")


def refusal(e: UpstreamError, what: str, missing: type[ManifestUnknown] | type[BlobUnknown]) -> RegistryError:
    """The RegistryError a client gets when the upstream could not give `what` (`missing` when it has
    no such thing)."""
    detail = {"upstream": e.url, "reason": e.reason}
    if isinstance(e, UpstreamMissing):
        return missing(detail, message=f"{what} is not in the upstream {e.url}")
    if isinstance(e, UpstreamDenied):
        return Denied(detail, message=f"the upstream {e.url} refused this registry's credentials for {what}")
    return Unavailable(detail, message=f"the upstream {e.url} is unreachable and {what} is not cached: {e.reason}")
