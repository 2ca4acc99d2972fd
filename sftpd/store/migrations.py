"""Versioned schema. Append a step; never edit one that has shipped."""

from __future__ import annotations

SQLITE_STEPS: list[str] = [
    # 1: users and their public keys
    """
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        password_hash TEXT,
        quota_bytes   INTEGER,
        disabled      INTEGER NOT NULL DEFAULT 0,
        used_bytes    INTEGER NOT NULL DEFAULT 0,
        used_files    INTEGER NOT NULL DEFAULT 0,
        created_at    REAL NOT NULL
    );
    CREATE TABLE user_keys (
        user        TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        fingerprint TEXT NOT NULL,
        algorithm   TEXT NOT NULL,
        public_key  TEXT NOT NULL,
        comment     TEXT NOT NULL DEFAULT '',
        added_at    REAL NOT NULL,
        PRIMARY KEY (user, fingerprint)
    );
    """,
]

SQLITE_STEPS.append(
    # 2: quota ledger. reservations: bytes each live server process (holder) has claimed
    # for a user's in-flight writes; activity: bumped by every usage change, so a disk
    # scan can tell whether anything moved while it ran.
    """
    ALTER TABLE users ADD COLUMN max_files INTEGER;
    ALTER TABLE users ADD COLUMN activity INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE reservations (
        user       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        holder     TEXT NOT NULL,
        bytes      INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (user, holder)
    );
    """
)

SQLITE_STEPS.append(
    # 3: shared defences. defender: authentication failures per client address within an
    # observation window, and until when the address is blocked. connections: every live
    # connection of every server process (holder), so the per-address and per-user limits
    # hold across worker processes and nodes; rows of a dead holder are dropped at start.
    """
    CREATE TABLE defender (
        addr         TEXT PRIMARY KEY,
        failures     INTEGER NOT NULL,
        window_start REAL NOT NULL,
        banned_until REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE connections (
        id      TEXT PRIMARY KEY,
        holder  TEXT NOT NULL,
        addr    TEXT NOT NULL,
        user    TEXT,
        started REAL NOT NULL
    );
    CREATE INDEX connections_addr ON connections (addr);
    CREATE INDEX connections_user ON connections (user);
    CREATE INDEX connections_holder ON connections (holder);
    """
)

SQLITE_STEPS.append(
    # 4: several nodes. holders: every live server process with its last heartbeat, so a
    # node that died (and whose pid cannot be checked from here) is noticed by the others.
    # users.dirty: a dead holder's reservations were dropped; usage needs a disk scan.
    """
    CREATE TABLE holders (
        holder TEXT PRIMARY KEY,
        seen   REAL NOT NULL
    );
    ALTER TABLE users ADD COLUMN dirty INTEGER NOT NULL DEFAULT 0;
    """
)

SQLITE_STEPS.append(
    # 5: access control. permissions: comma list (NULL: all); path_permissions: overrides
    # per virtual directory; allowed_from: comma list of CIDR networks (NULL: anywhere);
    # expires_at: epoch seconds (NULL: never); *_bps: bandwidth limits (0: unlimited).
    # folders: shared directories; each has a ledger account "@NAME" in users (a name no
    # user can have), so its quota is kept by the same ledger; folder_mounts: where a
    # user sees a folder.
    """
    ALTER TABLE users ADD COLUMN permissions TEXT;
    ALTER TABLE users ADD COLUMN allowed_from TEXT;
    ALTER TABLE users ADD COLUMN expires_at REAL;
    ALTER TABLE users ADD COLUMN upload_bps INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN download_bps INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE path_permissions (
        user        TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        path        TEXT NOT NULL,
        permissions TEXT NOT NULL,
        PRIMARY KEY (user, path)
    );
    CREATE TABLE folders (
        name       TEXT PRIMARY KEY,
        path       TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE folder_mounts (
        user   TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        vpath  TEXT NOT NULL,
        folder TEXT NOT NULL REFERENCES folders(name) ON DELETE CASCADE,
        PRIMARY KEY (user, vpath)
    );
    """
)

SQLITE_STEPS.append(
    # 6: users.room_wanted: when a claim was last refused while other holders held
    # reservations; they hand back what they do not use when it changes (docs/quota.md).
    """
    ALTER TABLE users ADD COLUMN room_wanted REAL NOT NULL DEFAULT 0;
    """
)

SQLITE_STEPS.append(
    # 7: the outbox and history (sftpd/store/outbox.py). events: every event, the fields
    # not in columns as JSON in data; id starts with the time (its index serves both);
    # deliveries: each hook's delivery of one, leased by a holder while attempted.
    """
    CREATE TABLE events (
        seq  INTEGER PRIMARY KEY,
        id   TEXT NOT NULL UNIQUE,
        time REAL NOT NULL,
        name TEXT NOT NULL,
        user TEXT NOT NULL,
        path TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL
    );
    CREATE INDEX events_user ON events (user, seq);
    CREATE TABLE deliveries (
        event_seq   INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
        hook        TEXT NOT NULL,
        label       TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        holder      TEXT,
        error       TEXT NOT NULL DEFAULT '',
        done_at     REAL,
        PRIMARY KEY (event_seq, hook)
    );
    CREATE INDEX deliveries_due ON deliveries (hook, next_at) WHERE state = 'pending';
    CREATE INDEX deliveries_holder ON deliveries (holder) WHERE state = 'pending';
    """
)

SQLITE_STEPS.append(
    # 8: stronger logins (docs/security.md). login_policy: which methods, alone or
    # chained, admit the user (NULL: the server's default); totp_secret: the base32 TOTP
    # secret (NULL: no second factor); totp_step: the last time step a code was accepted
    # for, so a code is used once; recovery_codes: single-use codes, stored as sha256.
    # user_keys.allowed_from: CIDR networks the key is accepted from ('': anywhere);
    # user_keys.exempt: the key completes a login alone, whatever the policy (only with
    # allowed_from; for automation on known hosts).
    """
    ALTER TABLE users ADD COLUMN login_policy TEXT;
    ALTER TABLE users ADD COLUMN totp_secret TEXT;
    ALTER TABLE users ADD COLUMN totp_step INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE user_keys ADD COLUMN allowed_from TEXT NOT NULL DEFAULT '';
    ALTER TABLE user_keys ADD COLUMN exempt INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE recovery_codes (
        user      TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        PRIMARY KEY (user, code_hash)
    );
    """
)

# The same schema for PostgreSQL, as it stands after every SQLite step above. Steps are
# applied under an advisory lock, so nodes starting at once migrate exactly once.
POSTGRES_STEPS: list[str] = [
    """
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        password_hash TEXT,
        quota_bytes   BIGINT,
        disabled      BOOLEAN NOT NULL DEFAULT FALSE,
        used_bytes    BIGINT NOT NULL DEFAULT 0,
        used_files    BIGINT NOT NULL DEFAULT 0,
        created_at    DOUBLE PRECISION NOT NULL,
        max_files     BIGINT,
        activity      BIGINT NOT NULL DEFAULT 0,
        dirty         BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE TABLE user_keys (
        "user"      TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        fingerprint TEXT NOT NULL,
        algorithm   TEXT NOT NULL,
        public_key  TEXT NOT NULL,
        comment     TEXT NOT NULL DEFAULT '',
        added_at    DOUBLE PRECISION NOT NULL,
        PRIMARY KEY ("user", fingerprint)
    );
    CREATE TABLE reservations (
        "user"     TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        holder     TEXT NOT NULL,
        bytes      BIGINT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY ("user", holder)
    );
    CREATE TABLE defender (
        addr         TEXT PRIMARY KEY,
        failures     INTEGER NOT NULL,
        window_start DOUBLE PRECISION NOT NULL,
        banned_until DOUBLE PRECISION NOT NULL DEFAULT 0
    );
    CREATE TABLE connections (
        id      TEXT PRIMARY KEY,
        holder  TEXT NOT NULL,
        addr    TEXT NOT NULL,
        "user"  TEXT,
        started DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX connections_addr ON connections (addr);
    CREATE INDEX connections_user ON connections ("user");
    CREATE INDEX connections_holder ON connections (holder);
    CREATE TABLE holders (
        holder TEXT PRIMARY KEY,
        seen   DOUBLE PRECISION NOT NULL
    );
    """,
]

POSTGRES_STEPS.append(
    # 2: access control (SQLite step 5)
    """
    ALTER TABLE users ADD COLUMN permissions TEXT;
    ALTER TABLE users ADD COLUMN allowed_from TEXT;
    ALTER TABLE users ADD COLUMN expires_at DOUBLE PRECISION;
    ALTER TABLE users ADD COLUMN upload_bps BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN download_bps BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE path_permissions (
        "user"      TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        path        TEXT NOT NULL,
        permissions TEXT NOT NULL,
        PRIMARY KEY ("user", path)
    );
    CREATE TABLE folders (
        name       TEXT PRIMARY KEY,
        path       TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE folder_mounts (
        "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        vpath  TEXT NOT NULL,
        folder TEXT NOT NULL REFERENCES folders(name) ON DELETE CASCADE,
        PRIMARY KEY ("user", vpath)
    );
    """
)

POSTGRES_STEPS.append(
    # 3: users.room_wanted (SQLite step 6)
    """
    ALTER TABLE users ADD COLUMN room_wanted DOUBLE PRECISION NOT NULL DEFAULT 0;
    """
)

POSTGRES_STEPS.append(
    # 4: the outbox and history (SQLite step 7)
    """
    CREATE TABLE events (
        seq    BIGSERIAL PRIMARY KEY,
        id     TEXT NOT NULL UNIQUE,
        time   DOUBLE PRECISION NOT NULL,
        name   TEXT NOT NULL,
        "user" TEXT NOT NULL,
        path   TEXT NOT NULL DEFAULT '',
        data   TEXT NOT NULL
    );
    CREATE INDEX events_user ON events ("user", seq);
    CREATE TABLE deliveries (
        event_seq   BIGINT NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
        hook        TEXT NOT NULL,
        label       TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        holder      TEXT,
        error       TEXT NOT NULL DEFAULT '',
        done_at     DOUBLE PRECISION,
        PRIMARY KEY (event_seq, hook)
    );
    CREATE INDEX deliveries_due ON deliveries (hook, next_at) WHERE state = 'pending';
    CREATE INDEX deliveries_holder ON deliveries (holder) WHERE state = 'pending';
    """
)

POSTGRES_STEPS.append(
    # 5: stronger logins (SQLite step 8)
    """
    ALTER TABLE users ADD COLUMN login_policy TEXT;
    ALTER TABLE users ADD COLUMN totp_secret TEXT;
    ALTER TABLE users ADD COLUMN totp_step BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE user_keys ADD COLUMN allowed_from TEXT NOT NULL DEFAULT '';
    ALTER TABLE user_keys ADD COLUMN exempt BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE TABLE recovery_codes (
        "user"    TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        PRIMARY KEY ("user", code_hash)
    );
    """
)
