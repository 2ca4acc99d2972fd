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
