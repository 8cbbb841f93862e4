"""The lab's state in SQLite (DIR/lab.sqlite, WAL): the fleet, every record ever created, the messages
handed out, the back office's accepted messages and stored records, request counters.

One writer (the lab process); the CLI reads (state, verify) with its own connections.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .wire import EPOCH, Ack, Message, record

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS servers (
    id INTEGER PRIMARY KEY,             -- 1-based index in the fleet
    name TEXT UNIQUE NOT NULL, address TEXT NOT NULL, host_id TEXT UNIQUE NOT NULL,
    security INTEGER NOT NULL, https INTEGER NOT NULL, username TEXT, password TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,     -- newest record created
    cursor INTEGER NOT NULL DEFAULT 0,       -- newest record handed out (download cursor)
    chain_time INTEGER NOT NULL DEFAULT 0,   -- sync time of the message handed out last (next FromTime)
    high_time INTEGER NOT NULL DEFAULT 0,    -- newest sync time ever handed out (keeps them unique)
    ack_time INTEGER NOT NULL DEFAULT 0,     -- last acknowledged sync time
    ack_seq INTEGER NOT NULL DEFAULT 0       -- newest record covered by that acknowledgment
);
-- The journal of every record ever created (never deleted); purged=1 once an acknowledgment covered it.
CREATE TABLE IF NOT EXISTS records (
    server_id INTEGER NOT NULL, seq INTEGER NOT NULL, created INTEGER NOT NULL,
    purged INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (server_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    server_id INTEGER NOT NULL, sync_time INTEGER NOT NULL, from_time INTEGER NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, forced INTEGER NOT NULL, handed_at REAL NOT NULL,
    PRIMARY KEY (server_id, sync_time)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bo_hosts (host_id TEXT PRIMARY KEY, last_sync_time INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS bo_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, host_id TEXT NOT NULL, sync_time INTEGER NOT NULL,
    from_time INTEGER NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    records INTEGER NOT NULL, sha256 TEXT NOT NULL, accepted_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS bo_messages_sha ON bo_messages (host_id, sha256);
-- Deliberately no UNIQUE constraint: the code never stores a record twice, and `verify` must be able to
-- see it if anything (or a test injecting rows) ever does.
CREATE TABLE IF NOT EXISTS bo_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT, host_id TEXT NOT NULL, seq INTEGER NOT NULL,
    record_id TEXT NOT NULL, message_sync_time INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS bo_records_key ON bo_records (host_id, seq);
CREATE TABLE IF NOT EXISTS counters (
    target TEXT NOT NULL, endpoint TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (target, endpoint));
"""


class AckError(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class Mismatch(Exception):
    def __init__(self, expected: int, got: int):
        super().__init__(f"expected {expected}, got {got}")
        self.expected, self.got = expected, got


@dataclass
class Server:
    id: int
    name: str
    address: str
    host_id: str
    security: bool
    https: bool
    username: str | None
    password: str | None


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
    else:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against a process crash
        db.executescript(SCHEMA)
    db.row_factory = sqlite3.Row
    return db


class State:
    """All state transitions, each one transaction."""

    def __init__(self, path: Path | str):
        self.db = connect(path)

    def close(self) -> None:
        self.db.close()

    # --- meta / config ---------------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def variants(self) -> list[str]:
        """The variants this lab plays (chosen when it was created)."""
        return json.loads(self.get("variants") or "[]")

    def put(self, **values: object) -> None:
        with self.tx():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, str(v)) for k, v in values.items()])

    def tx(self) -> _Tx:
        return _Tx(self.db)

    # --- fleet ------------------------------------------------------------------------------------------
    def servers(self) -> list[Server]:
        return [Server(r["id"], r["name"], r["address"], r["host_id"], bool(r["security"]), bool(r["https"]),
                       r["username"], r["password"])
                for r in self.db.execute("SELECT * FROM servers ORDER BY id")]

    def add_servers(self, servers: Iterable[Server]) -> None:
        with self.tx():
            self.db.executemany(
                "INSERT INTO servers (id, name, address, host_id, security, https, username, password) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [(s.id, s.name, s.address, s.host_id, int(s.security), int(s.https), s.username, s.password)
                 for s in servers])

    def add_records(self, count: int, server_ids: Iterable[int] | None = None, now: int | None = None) -> int:
        """New transaction records on each given server (all by default); returns how many were made."""
        now = int(time.time()) if now is None else now
        made = 0
        with self.tx():
            ids = list(server_ids) if server_ids is not None else [
                r[0] for r in self.db.execute("SELECT id FROM servers")]
            for sid in ids:
                (last,) = self.db.execute("SELECT last_seq FROM servers WHERE id=?", (sid,)).fetchone()
                self.db.executemany("INSERT INTO records (server_id, seq, created) VALUES (?,?,?)",
                                    [(sid, seq, now) for seq in range(last + 1, last + count + 1)])
                self.db.execute("UPDATE servers SET last_seq=? WHERE id=?", (last + count, sid))
                made += count
        return made

    def set_bulk(self, nbytes: int, server_ids: Iterable[int] | None = None) -> None:
        """The next message each given server (all by default) hands out carries nbytes of filler (0: none)."""
        with self.tx():
            ids = list(server_ids) if server_ids is not None else [
                r[0] for r in self.db.execute("SELECT id FROM servers")]
            self.db.executemany("DELETE FROM meta WHERE key=?", [(f"bulk:{sid}",) for sid in ids])
            if nbytes:
                self.db.executemany("INSERT INTO meta VALUES (?, ?)", [(f"bulk:{sid}", str(nbytes)) for sid in ids])

    # --- license server ---------------------------------------------------------------------------------
    def generate(self, server: Server, page_size: int, force: bool, now: int | None = None) -> Message | None:
        """Hand out the next page (advancing the cursor), or None when nothing is new.

        force restarts from the last acknowledged sync time: the cursor goes back there first.
        """
        now = int(time.time()) if now is None else now
        with self.tx():
            s = self.db.execute("SELECT * FROM servers WHERE id=?", (server.id,)).fetchone()
            cursor, chain = (s["ack_seq"], s["ack_time"]) if force else (s["cursor"], s["chain_time"])
            if cursor >= s["last_seq"]:
                if force:
                    self.db.execute("UPDATE servers SET cursor=?, chain_time=? WHERE id=?", (cursor, chain, s["id"]))
                return None
            first, last = cursor + 1, min(cursor + page_size, s["last_seq"])
            sync_time = max(now, s["high_time"] + 1)  # one message per second at most, never reused
            rows = self.db.execute("SELECT seq, created FROM records WHERE server_id=? AND seq BETWEEN ? AND ? "
                                   "ORDER BY seq", (s["id"], first, last)).fetchall()
            bulk = self.db.execute("DELETE FROM meta WHERE key=? RETURNING value", (f"bulk:{s['id']}",)).fetchone()
            msg = Message(s["host_id"], chain, sync_time, force, first, last,
                          [record(s["host_id"], seq, created) for seq, created in rows], int(bulk[0]) if bulk else 0)
            self.db.execute("INSERT INTO messages VALUES (?,?,?,?,?,?,?)",
                            (s["id"], sync_time, chain, first, last, int(force), time.time()))
            self.db.execute("UPDATE servers SET cursor=?, chain_time=?, high_time=? WHERE id=?",
                            (last, sync_time, sync_time, s["id"]))
        return msg

    def process_ack(self, server: Server, ack: Ack) -> tuple[int, bool, int]:
        """Apply an acknowledgment: (last acknowledged sync time, processed?, records purged)."""
        if ack.target_id != server.host_id:
            raise AckError("glsErr.syncAckTargetMismatch",
                           f"acknowledgment is for {ack.target_id}, this server is {server.host_id}")
        with self.tx():
            s = self.db.execute("SELECT * FROM servers WHERE id=?", (server.id,)).fetchone()
            if ack.last_sync_time <= s["ack_time"]:
                return s["ack_time"], False, 0  # stale or repeated: a no-op
            msg = self.db.execute("SELECT last_seq FROM messages WHERE server_id=? AND sync_time=?",
                                  (s["id"], ack.last_sync_time)).fetchone()
            if msg is None:
                raise AckError("glsErr.invalidSyncAck", "acknowledgment names a sync time this server never "
                                                        "handed out")
            covered = msg[0]
            purged = self.db.execute("UPDATE records SET purged=1 WHERE server_id=? AND seq<=? AND purged=0",
                                     (s["id"], covered)).rowcount
            # An acknowledgment beyond the cursor (processed after a forced reset) moves the cursor with it.
            if covered > s["cursor"]:
                self.db.execute("UPDATE servers SET cursor=?, chain_time=? WHERE id=?",
                                (covered, ack.last_sync_time, s["id"]))
            self.db.execute("UPDATE servers SET ack_time=?, ack_seq=? WHERE id=?",
                            (ack.last_sync_time, covered, s["id"]))
        return ack.last_sync_time, True, purged

    # --- back office ------------------------------------------------------------------------------------
    def upload(self, msg: Message, sha: str, reupload: str, now: int | None = None,
               mismatch_in_ack: bool = False) -> Ack:
        """Accept one message (store its records once, and the sha256 of its bytes) or raise Mismatch;
        `mismatch_in_ack` (the mismatch-at-process variant): answer the mismatch with an acknowledgment of what is
        stored instead."""
        now = int(time.time()) if now is None else now
        try:
            return self._upload(msg, sha, reupload, now)
        except Mismatch as exc:
            if not mismatch_in_ack:
                raise
            return Ack(msg.host_id, exc.expected, now, (exc.expected, exc.got))

    def _upload(self, msg: Message, sha: str, reupload: str, now: int) -> Ack:
        with self.tx():
            row = self.db.execute("SELECT last_sync_time FROM bo_hosts WHERE host_id=?", (msg.host_id,)).fetchone()
            last = row[0] if row else EPOCH
            seen = self.db.execute("SELECT 1 FROM bo_messages WHERE host_id=? AND sha256=?",
                                   (msg.host_id, sha)).fetchone()
            if seen:
                if reupload == "accept":
                    return Ack(msg.host_id, last, now)
                raise Mismatch(last, msg.from_time)
            if msg.from_time != last:
                raise Mismatch(last, msg.from_time)
            stored = 0
            for rec in msg.records:
                if self.db.execute("SELECT 1 FROM bo_records WHERE host_id=? AND seq=?",
                                   (msg.host_id, rec["seq"])).fetchone():
                    continue  # never store a record twice
                self.db.execute("INSERT INTO bo_records (host_id, seq, record_id, message_sync_time) "
                                "VALUES (?,?,?,?)", (msg.host_id, rec["seq"], rec["id"], msg.sync_time))
                stored += 1
            self.db.execute("INSERT INTO bo_messages (host_id, sync_time, from_time, first_seq, last_seq, records, "
                            "sha256, accepted_at) VALUES (?,?,?,?,?,?,?,?)",
                            (msg.host_id, msg.sync_time, msg.from_time, msg.first_seq, msg.last_seq, stored, sha,
                             time.time()))
            self.db.execute("INSERT OR REPLACE INTO bo_hosts VALUES (?, ?)", (msg.host_id, msg.sync_time))
        return Ack(msg.host_id, msg.sync_time, now)

    # --- counters ---------------------------------------------------------------------------------------
    def add_counts(self, counts: dict[tuple[str, str], int]) -> None:
        if not counts:
            return
        with self.tx():
            self.db.executemany(
                "INSERT INTO counters VALUES (?,?,?) ON CONFLICT (target, endpoint) "
                "DO UPDATE SET count=count+excluded.count", [(t, e, n) for (t, e), n in counts.items()])


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def snapshot(db: sqlite3.Connection) -> dict:
    """Everything `fnelab state` shows, from one read transaction (a consistent snapshot of a running lab)."""
    db.execute("BEGIN")
    try:
        return _snapshot(db)
    finally:
        db.execute("COMMIT")


def _snapshot(db: sqlite3.Connection) -> dict:
    counters: dict[str, dict[str, int]] = {}
    for target, endpoint, count in db.execute("SELECT target, endpoint, count FROM counters"):
        counters.setdefault(target, {})[endpoint] = count
    held = dict(db.execute("SELECT server_id, count(*) FROM records WHERE purged=0 GROUP BY server_id").fetchall())
    handed = dict(db.execute("SELECT server_id, count(*) FROM messages GROUP BY server_id").fetchall())
    servers = {}
    for s in db.execute("SELECT * FROM servers ORDER BY id"):
        servers[s["name"]] = {
            "host_id": s["host_id"], "created": s["last_seq"], "cursor": s["cursor"],
            "held": held.get(s["id"], 0), "messages_handed_out": handed.get(s["id"], 0),
            "last_sync_time": _iso_or_none(s["chain_time"]), "last_ack_time": _iso_or_none(s["ack_time"]),
            "acked_seq": s["ack_seq"], "requests": counters.get(s["name"], {})}
    bo_hosts = {h: _iso_or_none(t) for h, t in db.execute("SELECT host_id, last_sync_time FROM bo_hosts")}
    (bo_msgs,) = db.execute("SELECT count(*) FROM bo_messages").fetchone()
    (bo_recs,) = db.execute("SELECT count(*) FROM bo_records").fetchone()
    config = {k: v for k, v in db.execute("SELECT key, value FROM meta WHERE key IN "
                                          "('page_size', 'token_ttl', 'reupload')")}
    return {"servers": servers, "config": config,
            "backoffice": {"last_sync_times": bo_hosts, "messages_accepted": bo_msgs, "records": bo_recs,
                           "requests": counters.get("backoffice", {})}}


def _iso_or_none(ts: int) -> str | None:
    from .wire import iso
    return iso(ts) if ts else None
