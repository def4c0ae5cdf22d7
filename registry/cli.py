"""The `registry` command: `serve`, `gc`, `check`, `repo rm`, `user add|rm|list`, `config check`,
`events status`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import ipaddress
import json
import logging
import os
import resource
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from registry.config import ConfigError, Settings, as_dict, load_settings, parse_duration
from registry.logs import configure_logging
from registry.memory import cap_malloc_arenas

if TYPE_CHECKING:
    from registry.auth.users import Htpasswd
    from registry.check import CheckReport
    from registry.facade import RemovedRepository
    from registry.gc import Report
    from registry.reviews import ReviewReport
    from storage.drivers import Driver
    from storage.metadata import EndpointStatus, Metadata

T = TypeVar("T")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    flags = ("host", "port", "workers")
    http = {flag: getattr(args, flag) for flag in flags if getattr(args, flag, None) is not None}
    if http:
        overrides["http"] = http
    if getattr(args, "read_only", False):
        overrides["maintenance"] = {"read_only": True}
    return overrides


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config, overrides=_overrides(args))
    except ConfigError as e:
        sys.exit(f"registry: configuration error: {e}")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(args: argparse.Namespace) -> None:
    settings = _settings(args)
    configure_logging(settings)
    cap_malloc_arenas()  # inherited by forked workers; spawned ones cap their own (registry/asgi.py)
    log = logging.getLogger("registry")
    if settings.auth.mode == "none" and not _is_loopback(settings.http.host):
        log.warning(
            "serving on %s with no authentication: anyone who reaches this address can push and pull",
            settings.http.host,
        )
    if settings.auth.mode == "token":  # made once here, not by each worker
        from registry.auth.tokens import load_or_create_key

        load_or_create_key(settings.token_key_path, settings.auth.token.algorithm)
    if settings.http.tls_certificate and settings.http.tls_key:
        _check_tls(settings.http.tls_certificate, settings.http.tls_key, log)
    if settings.maintenance.read_only:
        log.warning(
            "read-only mode: pulls work, every push and delete answers 405; the collector (gc.interval) does "
            "not run and pull-through caches serve only what they hold"
        )
    asyncio.run(_prepare_metadata(settings))
    workers = settings.http.workers or os.cpu_count() or 1
    log.info(
        "data in %s, index %s; %d %s worker(s)",
        settings.storage_root,
        settings.index_url,
        workers,
        settings.http.server,
    )
    open_files = raise_open_file_limit()
    per_worker = connections_per_worker(settings, workers, open_files)
    if per_worker < settings.http.max_connections // workers:
        log.warning(
            "http.max_connections %d does not fit the open-file limit %d: %d connections per worker",
            settings.http.max_connections,
            open_files,
            per_worker,
        )
    from registry.metrics.exposition import for_workers

    with for_workers(settings.metrics):
        if settings.http.server == "granian":
            _serve_granian(settings, workers, per_worker)
        else:
            _serve_uvicorn(settings, workers, per_worker)


def _check_tls(certificate: str, key: str, log: logging.Logger) -> None:
    """Exit with a one-line error when the certificate and key cannot be served; log their warnings."""
    from registry.tls import TlsError, check_tls_files

    try:
        warnings = check_tls_files(certificate, key)
    except TlsError as e:
        sys.exit(f"registry: {e}")
    for warning in warnings:
        log.warning("%s", warning)


def _refuse_when_read_only(settings: Settings, what: str) -> None:
    """Exit when the settings put the registry in read-only mode, which `what` would break."""
    if settings.maintenance.read_only:
        sys.exit(f"registry: maintenance.read_only is on: {what} would change what is stored; turn it off first")


async def _prepare_metadata(settings: Settings) -> None:
    """Create or migrate the metadata store once, before the workers open it."""
    from registry.factory import make_metadata

    metadata = make_metadata(settings)
    await metadata.open()
    await metadata.close()


def raise_open_file_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit, so thousands of sockets fit (the workers
    inherit it); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit above the kernel's nr_open
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, _NR_OPEN_FALLBACK), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_NR_OPEN_FALLBACK = 1 << 20  # Linux's default fs.nr_open
_SPARE_FILES = 256  # descriptors a worker keeps for its metadata store, blobs and logs besides client sockets


def connections_per_worker(settings: Settings, workers: int, open_files: int) -> int:
    """`http.max_connections` shared among `workers`, each at most what its open-file limit leaves room for."""
    share = max(1, settings.http.max_connections // workers)
    if open_files == resource.RLIM_INFINITY:
        return share
    return max(1, min(share, open_files - _SPARE_FILES))


def _serve_uvicorn(settings: Settings, workers: int, per_worker: int) -> None:
    import uvicorn

    http = settings.http
    options: dict[str, Any] = {
        "host": http.host,
        "port": http.port,
        "access_log": False,
        "log_config": None,
        "lifespan": "on",
        "server_header": False,
        "ssl_certfile": http.tls_certificate,
        "ssl_keyfile": http.tls_key,
        # h11, not httptools: only h11 bounds the request head (httptools buffers headers without limit).
        "http": "h11",
        "h11_max_incomplete_event_size": http.max_header_bytes,
        "limit_concurrency": per_worker,  # above it, new connections get 503 at once
        "backlog": http.backlog,
        "timeout_keep_alive": http.keep_alive_s,
    }
    if workers == 1:
        from registry.app import create_app

        uvicorn.Server(uvicorn.Config(create_app(settings), **options)).run()
        return
    from registry.asgi import SETTINGS_VARIABLE

    # Each worker process builds its own app from the same settings, passed down in the environment.
    os.environ[SETTINGS_VARIABLE] = json.dumps(as_dict(settings))
    uvicorn.run("registry.asgi:app", factory=True, workers=workers, **options)


def _serve_granian(settings: Settings, workers: int, per_worker: int) -> None:
    from pathlib import Path

    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings, HTTP2Settings

    from registry.asgi import SETTINGS_VARIABLE
    from registry.logs import logging_config

    http = settings.http
    os.environ[SETTINGS_VARIABLE] = json.dumps(as_dict(settings))
    tls: dict[str, Any] = {}
    if http.tls_certificate and http.tls_key:
        # TLS 1.2 and 1.3, as uvicorn and Distribution serve (granian's own minimum is 1.3).
        tls = {
            "ssl_cert": Path(http.tls_certificate),
            "ssl_key": Path(http.tls_key),
            "ssl_protocol_min": SSLProtocols.tls12,
        }
    Granian(
        "registry.asgi:app",
        address=http.host,
        port=http.port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        log_access=False,
        log_dictconfig=logging_config(settings),  # granian's own lines in the registry's format, on stderr
        # HTTP/1 only by default: with HTTP/2 on, hyper first reads the bytes that tell the protocol, with no
        # timer, so a connection that sends nothing is held until the client closes it.
        http=HTTPModes.auto if http.http2 else HTTPModes.http1,
        backlog=http.backlog,
        # Connections a worker serves at once; it accepts no more until one closes (granian's default,
        # backlog / workers, let half-open connections lock every client out).
        backpressure=per_worker,
        # hyper bounds the request head by its read buffer: max_buffer_size is both the head size at which an
        # unfinished head gets 431 (one read more may still complete it) and the most of a body read at once.
        # header_read_timeout runs from the connection's start (HTTP/1 only) or the end of the previous
        # response to the end of the head: it also closes idle keep-alive connections.
        http1_settings=HTTP1Settings(
            header_read_timeout=http.header_timeout_s * 1000,
            max_buffer_size=http.max_header_bytes,
        ),
        http2_settings=HTTP2Settings(max_headers_size=http.max_header_bytes),
        **tls,
    ).serve()


def _htpasswd(args: argparse.Namespace) -> Htpasswd:
    from registry.auth.users import Htpasswd

    return Htpasswd(_settings(args).htpasswd_path)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        sys.exit("registry: the passwords differ")
    return password


def user_add(args: argparse.Namespace) -> None:
    from registry.auth.users import UserError

    users = _htpasswd(args)
    try:
        users.set_password(args.name, _read_password(args))
    except UserError as e:
        sys.exit(f"registry: {e}")
    print(f"user {args.name} saved in {users.path}")


def user_remove(args: argparse.Namespace) -> None:
    users = _htpasswd(args)
    if not users.remove(args.name):
        sys.exit(f"registry: no user {args.name!r} in {users.path}")
    print(f"user {args.name} removed")


def user_list(args: argparse.Namespace) -> None:
    for name in _htpasswd(args).users():
        print(name)


async def _with_storage(settings: Settings, work: Callable[[Metadata, Driver], Awaitable[T]]) -> T:
    """Run `work(metadata, driver)` with the metadata store open."""
    from registry.factory import make_driver, make_metadata

    metadata = make_metadata(settings)
    await metadata.open()
    try:
        return await work(metadata, make_driver(settings))
    finally:
        await metadata.close()


def gc(args: argparse.Namespace) -> None:
    from registry.gc import Collector, CollectorBusy

    settings = _settings(args)
    if not args.dry_run:
        _refuse_when_read_only(settings, "a garbage collection")
    if args.collectors < 1:
        sys.exit("registry: --collectors: 1 or more")

    async def collect(metadata: Metadata, driver: Driver) -> Report | ReviewReport:
        if not (args.dry_run or args.full):  # every due review, now
            from registry.reviews import ReviewCollector, run_due_side_by_side

            gc, untagged = settings.gc, settings.gc.delete_untagged or args.delete_untagged
            reviewers = [
                ReviewCollector(metadata, driver, parse_duration(gc.grace), untagged, rest=gc.rest)
                for _ in range(args.collectors)
            ]
            return await run_due_side_by_side(reviewers)
        collector = Collector.configured(metadata, driver, settings)
        return await collector.run(dry_run=args.dry_run, delete_untagged=args.delete_untagged)

    try:
        report = asyncio.run(_with_storage(settings, collect))
    except CollectorBusy:
        sys.exit("registry: another garbage collection is running; try again later")
    print(report.to_json() if args.json else report.summary())


def check(args: argparse.Namespace) -> None:
    from registry.check import check as check_storage

    settings = _settings(args)
    if args.repair:
        _refuse_when_read_only(settings, "a repair")

    async def run(metadata: Metadata, driver: Driver) -> CheckReport:
        prefixes = [upstream.prefix for upstream in settings.proxy.upstreams]
        return await check_storage(metadata, driver, verify_digests=args.verify_digests, cache_prefixes=prefixes)

    report = asyncio.run(_with_storage(settings, run))
    for problem in report.problems:
        print(f"problem: {problem}")
    for orphan in report.orphans:
        print(f"unknown to the index: {orphan}")
    for leftover in report.leftovers:
        print(f"left by an abandoned write: {leftover}")
    verdict = "index and storage agree" if report.ok else f"{len(report.problems)} problems"
    print(
        f"checked {report.blobs} blobs and {report.manifests} manifests: {verdict}; {len(report.orphans)} orphans, "
        f"{len(report.leftovers)} leftovers of abandoned writes"
        + (
            f"; {report.not_yet_cached} blob references of cached images not pulled yet"
            if report.not_yet_cached
            else ""
        )
    )
    if args.repair:
        from registry.gc import Collector, CollectorBusy

        async def repair(metadata: Metadata, driver: Driver) -> Report:
            return await Collector.configured(metadata, driver, settings).run(storage_only=True)

        try:
            repaired = asyncio.run(_with_storage(settings, repair))
        except CollectorBusy:
            sys.exit("registry: a garbage collection is running; try again later")
        print(f"repair (what is older than gc.grace): {repaired.summary()}")
    if not report.ok:
        sys.exit(1)


def repo_remove(args: argparse.Namespace) -> None:
    from registry.errors import NameUnknown
    from registry.factory import make_registry
    from registry.names import parse_name

    settings = _settings(args)
    _refuse_when_read_only(settings, "removing a repository")
    name = parse_name(args.name)

    async def remove(metadata: Metadata, driver: Driver) -> RemovedRepository:
        from registry.events.records import command_caller

        registry = make_registry(settings, metadata, driver)
        return await registry.delete_repository(name, command_caller("registry repo rm"))

    try:
        removed = asyncio.run(_with_storage(settings, remove))
    except NameUnknown:
        sys.exit(f"registry: no repository {name!r}")
    print(f"removed {name}: {removed.tags} tags, {removed.manifests} manifests, {len(removed.uploads)} uploads")
    print("its blobs are freed by the next garbage collection (`registry gc`)")


def events_status(args: argparse.Namespace) -> None:
    from registry.events.status import as_json, as_text

    settings = _settings(args)
    configured = [endpoint.name for endpoint in settings.events.endpoints]

    async def read(metadata: Metadata, driver: Driver) -> list[EndpointStatus]:
        return await metadata.events.status(configured)

    statuses = asyncio.run(_with_storage(settings, read))
    print(as_json(statuses, configured) if args.json else as_text(statuses, configured))


def config_check(args: argparse.Namespace) -> None:
    settings = _settings(args)
    print(json.dumps(as_dict(settings), indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="registry", description="A private container registry.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="serve the registry API")
    serve_parser.add_argument("--config", help="YAML configuration file")
    serve_parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve_parser.add_argument("--port", type=int, help="port to listen on (default 5000)")
    serve_parser.add_argument("--data-dir", help="where the index and the blobs live (default ./data)")
    serve_parser.add_argument("--workers", type=int, help="worker processes (default: one per CPU core)")
    serve_parser.add_argument(
        "--read-only", action="store_true", help="serve pulls only: every write answers 405 (maintenance.read_only)"
    )
    serve_parser.set_defaults(run=serve)

    config_parser = commands.add_parser("config", help="configuration tools")
    config_commands = config_parser.add_subparsers(dest="config_command", required=True)
    check_parser = config_commands.add_parser("check", help="validate and print the effective configuration")
    check_parser.add_argument("--config", help="YAML configuration file")
    check_parser.set_defaults(run=config_check)

    gc_parser = commands.add_parser(
        "gc",
        help="collect garbage: decide every review due now (--full: mark and sweep the whole index)",
    )
    gc_parser.add_argument("--config", help="YAML configuration file")
    gc_parser.add_argument("--data-dir", help="data directory (default ./data)")
    gc_parser.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    gc_parser.add_argument(
        "--delete-untagged",
        action="store_true",
        help="also delete manifests no tag reaches (children of kept indexes and referrers of kept images stay)",
    )
    gc_parser.add_argument(
        "--full",
        action="store_true",
        help="mark and sweep the whole index (bounded memory, short write transactions): "
        "for a first run on an old index, or after a repair",
    )
    gc_parser.add_argument(
        "--collectors",
        type=int,
        default=1,
        help="review collectors side by side (default 1): on PostgreSQL more finish sooner, and weigh more on "
        "pushes meanwhile",
    )
    gc_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    gc_parser.set_defaults(run=gc)

    check_parser = commands.add_parser(
        "check", help="verify that index and storage agree (changes nothing without --repair)"
    )
    check_parser.add_argument("--config", help="YAML configuration file")
    check_parser.add_argument("--data-dir", help="data directory (default ./data)")
    check_parser.add_argument("--verify-digests", action="store_true", help="also hash every blob (reads everything)")
    check_parser.add_argument(
        "--repair",
        action="store_true",
        help="then delete the orphans and leftovers older than gc.grace, as the garbage collector does",
    )
    check_parser.set_defaults(run=check)

    repo_parser = commands.add_parser("repo", help="manage repositories")
    repo_commands = repo_parser.add_subparsers(dest="repo_command", required=True)
    rm_parser = repo_commands.add_parser("rm", help="delete a repository: its tags, manifests and uploads")
    rm_parser.add_argument("--config", help="YAML configuration file")
    rm_parser.add_argument("--data-dir", help="data directory (default ./data)")
    rm_parser.add_argument("name")
    rm_parser.set_defaults(run=repo_remove)

    events_parser = commands.add_parser("events", help="webhook events")
    events_commands = events_parser.add_subparsers(dest="events_command", required=True)
    status_parser = events_commands.add_parser("status", help="per endpoint: pending, delivered, failed, last error")
    status_parser.add_argument("--config", help="YAML configuration file")
    status_parser.add_argument("--data-dir", help="data directory (default ./data)")
    status_parser.add_argument("--json", action="store_true", help="print the statuses as JSON")
    status_parser.set_defaults(run=events_status)

    user_parser = commands.add_parser("user", help="manage the users of the htpasswd file")
    user_commands = user_parser.add_subparsers(dest="user_command", required=True)
    for command, run, help_text in (
        ("add", user_add, "add a user or change their password"),
        ("rm", user_remove, "remove a user"),
        ("list", user_list, "list the users"),
    ):
        sub = user_commands.add_parser(command, help=help_text)
        sub.add_argument("--config", help="YAML configuration file")
        sub.add_argument("--data-dir", help="data directory (default ./data)")
        if command != "list":
            sub.add_argument("name")
        if command == "add":
            sub.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        sub.set_defaults(run=run)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
