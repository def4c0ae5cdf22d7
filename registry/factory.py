"""What the settings describe, built in one place: the storage driver, the metadata store and the
registry over them (for the app and the command line alike)."""

from __future__ import annotations

from registry.config import Settings, parse_duration
from registry.events import Outbox
from registry.facade import Registry
from registry.proxy.routing import Routes
from registry.proxy.upstream import Tally
from storage.drivers import Driver
from storage.drivers.local import LocalDriver
from storage.drivers.memory import MemoryDriver
from storage.metadata import Metadata, open_metadata


def make_driver(settings: Settings) -> Driver:
    """The storage driver the settings name."""
    if settings.storage.kind == "memory":
        return MemoryDriver()
    if settings.storage.kind == "s3":  # boto3 is imported only by registries that use S3
        from storage.drivers.s3 import S3Driver

        s3 = settings.storage.s3
        assert s3.bucket is not None
        return S3Driver(
            s3.bucket, prefix=s3.prefix, endpoint=s3.endpoint, region=s3.region, max_connections=s3.max_connections
        )
    return LocalDriver(settings.storage_root)


def make_metadata(settings: Settings) -> Metadata:
    """The metadata store the settings name, not yet opened."""
    return open_metadata(settings.index_url, parse_duration(settings.gc.grace))


def make_registry(settings: Settings, metadata: Metadata, driver: Driver, tally: Tally | None = None) -> Registry:
    """The registry over `metadata` and `driver`, with the settings' limits and switches; its upstream
    clients report their fetched bytes and failures to `tally`."""
    return Registry(
        metadata,
        driver,
        delete_enabled=settings.storage.delete_enabled,
        manifest_max_bytes=settings.manifests.max_bytes,
        manifest_cache_bytes=settings.manifests.cache_bytes,
        redirect_expiry_s=settings.storage.s3.redirect_expiry_s if settings.storage.s3.redirect else None,
        routes=Routes(settings.proxy, tally) if settings.proxy.upstreams else None,
        read_only=settings.maintenance.read_only,
        events=make_outbox(settings),
    )


def make_outbox(settings: Settings) -> Outbox | None:
    """The event outbox of the settings' webhooks; None without any (then no event is written)."""
    if not settings.events.endpoints:
        return None
    return Outbox(settings.events, settings.http.port, settings.http.trusted_proxies)
