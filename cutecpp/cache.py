"""A SQLite cache of finished pictures: the same prompt, seed and settings on the same model give the
same picture, so a classroom's frequent prompts come back in milliseconds.

- Key: sha256 of the model id, the bundle file's sha256, the prompt's normalised key, seed and every
  setting (`picture_key`).
- Bounded: after each insert, least recently used pictures go until the total is under `max_bytes`.
- Two processes (the CLI and a kiosk server) may share the file: WAL mode, a busy timeout, and
  every change in one transaction.
- Never fatal: a corrupt file is moved aside and rebuilt; an unusable directory turns the cache off
  with a warning. A cache problem must never cost a child their picture.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from .paths import cache_dir

DEFAULT_MAX_BYTES = 256 << 20
SCHEMA = 1


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """Only a damaged file is rebuilt; a busy or full disk must not cost the cached pictures."""
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "unknown cache schema" in str(exc)
    text = str(exc)
    return any(s in text for s in ("not a database", "malformed", "unknown cache schema"))


def picture_key(**fields: Any) -> str:
    """A stable key from JSON-serialisable fields (model_id, prompt key, seed, settings, format)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class PictureCache:
    def __init__(self, path: str | Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "pictures.sqlite3"
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.enabled = True

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA):
                raise sqlite3.DatabaseError(f"unknown cache schema {version}")
            db.execute(
                "CREATE TABLE IF NOT EXISTS pictures (key TEXT PRIMARY KEY, data BLOB NOT NULL, meta TEXT NOT NULL,"
                " size INTEGER NOT NULL, created REAL NOT NULL, used REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS pictures_used ON pictures(used)")
            db.execute(f"PRAGMA user_version={SCHEMA}")
            db.execute("SELECT count(*) FROM pictures").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _conn(self) -> sqlite3.Connection | None:
        if not self.enabled:
            return None
        if self._db is None:
            try:
                self._db = self._connect()
            except sqlite3.Error as exc:
                if _is_corrupt(exc):
                    self._rebuild(exc)
                else:
                    self._disable(exc)
            except OSError as exc:
                self._disable(exc)
        return self._db

    def _rebuild(self, exc: Exception) -> None:
        """Move a corrupt database aside and start an empty one."""
        warnings.warn(f"picture cache {self.path} is unreadable ({exc}); starting a new one", stacklevel=3)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                try:
                    p.replace(Path(f"{self.path}.corrupt-{stamp}{suffix}"))
                except OSError:
                    p.unlink(missing_ok=True)
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError) as again:
            self._disable(again)

    def _disable(self, exc: Exception) -> None:
        warnings.warn(f"picture cache turned off: {self.path}: {exc}", stacklevel=3)
        self.enabled = False
        self._db = None

    def _run(self, fn):
        """Run fn(db) under the lock; a corrupt file found mid-use is rebuilt once."""
        with self._lock:
            for attempt in range(2):
                db = self._conn()
                if db is None:
                    return None
                try:
                    return fn(db)
                except sqlite3.Error as exc:
                    if not _is_corrupt(exc):  # busy, locked, disk full, I/O: skip this use only
                        warnings.warn(f"picture cache skipped: {exc}", stacklevel=3)
                        return None
                    self.close_locked()
                    if attempt == 0:
                        self._rebuild(exc)
                    else:
                        self._disable(exc)
            return None

    # -- API ----------------------------------------------------------------------------------

    def get(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        def fn(db):
            row = db.execute("SELECT data, meta FROM pictures WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE pictures SET used = ? WHERE key = ?", (time.time(), key))
            return bytes(row[0]), json.loads(row[1])

        return self._run(fn)

    def put(self, key: str, data: bytes, meta: dict[str, Any]) -> None:
        if len(data) > self.max_bytes:
            return

        def fn(db):
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR REPLACE INTO pictures (key, data, meta, size, created, used) VALUES (?, ?, ?, ?, ?, ?)",
                    (key, sqlite3.Binary(data), json.dumps(meta, ensure_ascii=False), len(data), now, now),
                )
                self._evict(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        self._run(fn)

    def _evict(self, db: sqlite3.Connection) -> None:
        total = db.execute("SELECT coalesce(sum(size), 0) FROM pictures").fetchone()[0]
        if total <= self.max_bytes:
            return
        for key, size in db.execute("SELECT key, size FROM pictures ORDER BY used ASC").fetchall():
            db.execute("DELETE FROM pictures WHERE key = ?", (key,))
            total -= size
            if total <= self.max_bytes:
                break

    def stats(self) -> dict[str, Any]:
        row = self._run(lambda db: db.execute("SELECT count(*), coalesce(sum(size), 0) FROM pictures").fetchone())
        count, size = row if row else (0, 0)
        return {"path": str(self.path), "enabled": self.enabled, "pictures": count, "bytes": size,
                "max_bytes": self.max_bytes}

    def clear(self) -> None:
        self._run(lambda db: db.execute("DELETE FROM pictures"))

    def close_locked(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()
