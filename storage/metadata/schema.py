"""The metadata schema as numbered migrations, written in SQL that SQLite and PostgreSQL both accept."""

from __future__ import annotations

from storage.metadata.database import Connection, one

# The states of a blob's row (`blobs.state`).
PRESENT = "present"
DELETING = "deleting"  # the collector is deleting its bytes; it never becomes present again

# Each entry is one schema version; a database at version N has applied entries 1..N. Never edit a
# released entry: append a new one. A statement is SQL for every database, or (dialect, SQL) for one.
Statement = str | tuple[str, str]
MIGRATIONS: list[list[Statement]] = [
    [
        """CREATE TABLE repositories (
            name TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL)""",
        # state: 'present', or 'deleting' while the collector removes the bytes.
        """CREATE TABLE blobs (
            digest TEXT PRIMARY KEY,
            size BIGINT NOT NULL,
            state TEXT NOT NULL DEFAULT 'present',
            created_at DOUBLE PRECISION NOT NULL,
            last_used_at DOUBLE PRECISION NOT NULL)""",
        # A blob is visible in a repository only when pushed or mounted there.
        """CREATE TABLE repository_blobs (
            repository TEXT NOT NULL,
            digest TEXT NOT NULL,
            linked_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (repository, digest))""",
        "CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest)",
        """CREATE TABLE manifests (
            repository TEXT NOT NULL,
            digest TEXT NOT NULL,
            media_type TEXT NOT NULL,
            artifact_type TEXT,
            subject TEXT,
            annotations TEXT,
            size BIGINT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (repository, digest))""",
        "CREATE INDEX manifests_by_subject ON manifests (repository, subject)",
        # kind: 'blob' (config, layer) or 'manifest' (child of an index).
        """CREATE TABLE manifest_references (
            repository TEXT NOT NULL,
            manifest TEXT NOT NULL,
            child TEXT NOT NULL,
            kind TEXT NOT NULL,
            PRIMARY KEY (repository, manifest, child))""",
        "CREATE INDEX manifest_references_by_child ON manifest_references (child)",
        """CREATE TABLE tags (
            repository TEXT NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (repository, name))""",
        "CREATE INDEX tags_by_digest ON tags (repository, digest)",
        """CREATE TABLE uploads (
            id TEXT PRIMARY KEY,
            repository TEXT NOT NULL,
            size BIGINT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL)""",
        # One row per committed chunk; `key` holds its bytes in the driver.
        """CREATE TABLE upload_chunks (
            upload TEXT NOT NULL,
            start BIGINT NOT NULL,
            size BIGINT NOT NULL,
            key TEXT NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY (upload, start))""",
    ],
    [
        # A lease per name (the garbage collector's): held by `holder` until `expires_at`.
        """CREATE TABLE locks (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL)""",
        # Reports of collections, newest kept.
        """CREATE TABLE gc_runs (
            started_at DOUBLE PRECISION NOT NULL,
            report TEXT NOT NULL)""",
        "CREATE INDEX blobs_by_state ON blobs (state, last_used_at)",
        "CREATE INDEX manifests_by_digest ON manifests (digest)",
        "CREATE INDEX uploads_by_update ON uploads (updated_at)",
    ],
    [
        # Listings are in byte order, whatever the database's locale.
        ("postgresql", 'ALTER TABLE repositories ALTER COLUMN name TYPE TEXT COLLATE "C"'),
        ("postgresql", 'ALTER TABLE tags ALTER COLUMN name TYPE TEXT COLLATE "C"'),
    ],
    [
        # A chunk keeps the upload's resumable hash state after it (hex), not a digest.
        "ALTER TABLE upload_chunks RENAME COLUMN digest TO hash_state",
    ],
    [
        # An upload keeps the resumable hash state after its last chunk (hex, "" when none was saved),
        # so that a chunk reads one row however many came before it.
        "ALTER TABLE uploads ADD COLUMN hash_state TEXT NOT NULL DEFAULT ''",
        """UPDATE uploads SET hash_state = COALESCE(
            (SELECT c.hash_state FROM upload_chunks c WHERE c.upload = uploads.id
             ORDER BY c.start DESC LIMIT 1), '')""",
    ],
    [
        # Recent failed (and in-progress) password checks, for the login limits every worker shares;
        # rows older than the window are deleted as new ones come.
        """CREATE TABLE login_failures (
            id TEXT PRIMARY KEY,
            username TEXT NOT NULL,
            address TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX login_failures_by_user ON login_failures (username, address)",
        "CREATE INDEX login_failures_by_address ON login_failures (address)",
        "CREATE INDEX login_failures_by_time ON login_failures (at)",
    ],
    [
        # The pull-through cache. A cached tag remembers when its upstream last confirmed it (NULL: a
        # tag pushed here); a cached manifest when it was last pulled (recorded in batches), so the
        # collector evicts the least recently pulled first.
        "ALTER TABLE tags ADD COLUMN checked_at DOUBLE PRECISION",
        "ALTER TABLE manifests ADD COLUMN pulled_at DOUBLE PRECISION",
        "CREATE INDEX manifests_by_pull ON manifests (pulled_at)",
    ],
    [
        # What `docker search` and the UI show of a repository: the description of the image its newest
        # tag names (org.opencontainers.image.description), set when a tag is pushed.
        "ALTER TABLE repositories ADD COLUMN description TEXT",
    ],
    [
        # The event outbox: one row per event and webhook endpoint, written in the transaction of the
        # change it reports, deleted once the endpoint took it; ids rise, so an endpoint gets its
        # events in order. Per endpoint, what it took and the last failure (for `registry events status`).
        (
            "sqlite",
            """CREATE TABLE event_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            endpoint TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL)""",
        ),
        (
            "postgresql",
            """CREATE TABLE event_outbox (
            id BIGSERIAL PRIMARY KEY,
            endpoint TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL)""",
        ),
        "CREATE INDEX event_outbox_by_endpoint ON event_outbox (endpoint, id)",
        """CREATE TABLE event_endpoints (
            name TEXT PRIMARY KEY,
            delivered BIGINT NOT NULL DEFAULT 0,
            failed BIGINT NOT NULL DEFAULT 0,
            last_error TEXT,
            last_error_at DOUBLE PRECISION,
            last_delivered_at DOUBLE PRECISION)""",
    ],
    [
        # Review queues of the incremental collector: a change that may have made a blob or a manifest
        # garbage queues it, in the change's own transaction, for review once `due_at` has passed.
        # A collector takes due reviews by `due_at` (setting `lease` to its own token and `due_at` to
        # when its claim lapses), decides each in a transaction of its own, and deletes the row.
        """CREATE TABLE gc_blob_reviews (
            digest TEXT PRIMARY KEY,
            due_at DOUBLE PRECISION NOT NULL,
            lease TEXT)""",
        "CREATE INDEX gc_blob_reviews_by_due ON gc_blob_reviews (due_at)",
        """CREATE TABLE gc_manifest_reviews (
            repository TEXT NOT NULL,
            digest TEXT NOT NULL,
            due_at DOUBLE PRECISION NOT NULL,
            lease TEXT,
            PRIMARY KEY (repository, digest))""",
        "CREATE INDEX gc_manifest_reviews_by_due ON gc_manifest_reviews (due_at)",
        # The parents of a manifest (the indexes listing it) within its repository.
        "CREATE INDEX manifest_references_by_repository_child ON manifest_references (repository, child)",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: Connection, dialect: str = "sqlite") -> int:
    """Bring the schema of `conn` (of `dialect`: sqlite or postgresql) up to SCHEMA_VERSION, inside
    the caller's transaction; returns the version found before. Raises RuntimeError for a newer schema."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    found: int = one(conn.execute("SELECT MAX(version) FROM schema_version"))[0] or 0
    if found > SCHEMA_VERSION:
        raise RuntimeError(
            f"the metadata database has schema version {found}; this registry knows up to {SCHEMA_VERSION}"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version - 1]:
            if isinstance(statement, tuple):
                only, statement = statement
                if only != dialect:
                    continue
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return found
