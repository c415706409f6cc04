//! SQLite backend of [`Store`]: one database file, WAL journal, a small pool
//! of connections (a `rusqlite::Connection` is `Send` but not `Sync`).
//!
//! Durability: `synchronous=FULL`. In WAL mode NORMAL may lose the last
//! commits on power loss (the WAL is only synced at checkpoints); weim answers
//! a sender only after its message is committed, so a commit must be on disk
//! when it returns. FULL costs one fsync of the WAL per write transaction.
//!
//! Concurrency: readers never block in WAL mode; writers queue on SQLite's
//! lock, waiting up to [`BUSY_TIMEOUT`] before the call fails with
//! `Unavailable`. A multi-statement write transaction must start with
//! `TransactionBehavior::Immediate`, so that it waits for the lock up front
//! instead of failing when a read lock cannot be upgraded.

mod import;
mod messages;
mod profile;
mod social;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::config::DbConfig;
use rusqlite::{ffi, params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

use super::{
    check_ban_reason, check_new_user, check_password_hash, check_schema_version, check_session_id,
    default_pool_size, username_key, Accounts, StoreError, User, UserStatus, USER_COLUMNS,
};

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL pages that make a commit copy the WAL back into the database. Each
/// batch of messages rewrites the newest index page of every sender and
/// recipient in it; with a checkpoint every 10,000 pages (40 MiB of WAL)
/// instead of SQLite's 1,000, such a page is copied once for many commits.
const CHECKPOINT_PAGES: u32 = 10_000;
/// Page cache of the committer's connection (others keep SQLite's 2 MiB).
const COMMITTER_CACHE_KIB: u32 = 16 * 1024;

/// The SQLite schema; mirrors `database.sql` (same tables, columns, indexes
/// and defaults). Idempotent: applied on every open.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    id      INTEGER NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO schema_version (id, version) VALUES (1, 1);

-- Usernames are unique case-insensitively through username_key
-- (see store::username_key); BINARY collation compares it byte by byte.
CREATE TABLE IF NOT EXISTS users (
    id                INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    username          TEXT    NOT NULL,
    username_key      TEXT    NOT NULL,
    password_hash     TEXT    NOT NULL,
    nickname          TEXT    NOT NULL,
    avatar            TEXT    NOT NULL DEFAULT '',
    sex               INTEGER NOT NULL DEFAULT 0,
    status            INTEGER NOT NULL DEFAULT 0,
    realname_verified INTEGER NOT NULL DEFAULT 0,
    realname          TEXT,
    id_card_mask      TEXT,
    id_card_hash      TEXT,
    longitude         REAL,
    latitude          REAL,
    location_at       INTEGER,
    created_at        INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS uk_users_username_key ON users (username_key);

CREATE TABLE IF NOT EXISTS revoked_sessions (
    sid     TEXT    NOT NULL PRIMARY KEY,
    ends_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_revoked_sessions_ends_at ON revoked_sessions (ends_at);

CREATE TABLE IF NOT EXISTS user_bans (
    user_id    INTEGER NOT NULL PRIMARY KEY,
    until      INTEGER NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
) STRICT;
";

/// [`Store`] on an SQLite file. Cheap to share: wrap it in an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    conns: Box<[Mutex<Connection>]>,
    next: AtomicUsize,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("connections", &self.conns.len())
            .finish()
    }
}

/// Opens (creating if needed) the database at `path` and its parent
/// directory, applies the schema, and opens `pool_size` connections
/// (0 = one per default worker thread) plus one kept for the committer.
pub fn open_sqlite(path: &Path, pool_size: usize) -> Result<SqliteStore, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    // One more than asked: the committer's own connection.
    let size = 1 + if pool_size == 0 {
        default_pool_size()
    } else {
        pool_size
    };
    let mut first = open_connection(path)?;
    apply_schema(&mut first)?;
    // The committer's connection (the first) holds the hot pages of the
    // message tables and their indexes between batches.
    first
        .execute_batch(&format!("PRAGMA cache_size = -{COMMITTER_CACHE_KIB}"))
        .map_err(map_err)?;
    let mut conns = Vec::with_capacity(size);
    conns.push(Mutex::new(first));
    for _ in 1..size {
        conns.push(Mutex::new(open_connection(path)?));
    }
    Ok(SqliteStore {
        path: path.to_path_buf(),
        conns: conns.into_boxed_slice(),
        next: AtomicUsize::new(0),
    })
}

/// Opens one connection and sets its per-connection options.
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(map_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
    // Persistent in the file, but cheap to repeat; it answers the new mode.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(map_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other(format!(
            "cannot use WAL journal on {} (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES};"
    ))
    .map_err(map_err)?;
    // Query plans are fixed when a statement is prepared: without this,
    // SQLite prepares a statement again whenever a value bound to a range
    // or a LIMIT changes (measured: every pending-messages query on
    // sign-in, ~20 µs each), and weim's queries have one good plan.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(map_err)?;
    social::register_functions(&conn).map_err(map_err)?;
    Ok(conn)
}

/// Creates missing tables and checks the recorded schema version, in one
/// transaction so that two processes opening a new file do not interleave.
fn apply_schema(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    for schema in [
        SCHEMA,
        social::SCHEMA,
        messages::SCHEMA,
        profile::SCHEMA,
        import::SCHEMA,
    ] {
        tx.execute_batch(schema).map_err(map_err)?;
    }
    let version: i64 = tx
        .query_row("SELECT version FROM schema_version WHERE id = 1", [], |r| {
            r.get(0)
        })
        .map_err(map_err)?;
    check_schema_version(version)?;
    tx.commit().map_err(map_err)
}

/// Maps an SQLite error: unique violations are `Conflict`, lock time-outs and
/// file-system trouble are `Unavailable`, the rest is `Other`.
fn map_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(err, _) = &e {
        match err.code {
            ErrorCode::ConstraintViolation
                if err.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || err.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                return StoreError::Conflict;
            }
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory => return StoreError::Unavailable(e.to_string()),
            _ => {}
        }
    }
    StoreError::Other(e.to_string())
}

/// Reads a row selected with [`USER_COLUMNS`].
fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let id: i64 = row.get(0)?;
    Ok(User {
        id: u64::try_from(id).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, id))?,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        nickname: row.get(3)?,
        avatar: row.get(4)?,
        sex: row.get(5)?,
        status: row.get(6)?,
        realname_verified: row.get(7)?,
        created_at: row.get(8)?,
    })
}

impl SqliteStore {
    /// Runs `f` on a free connection of the shared pool: tries each once
    /// without waiting, starting at a rotating index, then waits for the
    /// first one tried.
    pub(super) fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let pool = &self.conns[1..];
        let n = pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Some(mut conn) = pool[(start + i) % n].try_lock() {
                return f(&mut conn).map_err(map_err);
            }
        }
        let mut conn = pool[start].lock();
        f(&mut conn).map_err(map_err)
    }

    /// Runs `f` on the connection kept for the chat committer's message
    /// inserts. Its page cache stays warm: a
    /// connection's cache is dropped whenever another one has written, and
    /// the committer writes far more often than anyone else.
    pub(super) fn with_committer_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        f(&mut self.conns[0].lock()).map_err(map_err)
    }
}

impl Accounts for SqliteStore {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<User, StoreError> {
        check_new_user(username, password_hash)?;
        let key = username_key(username);
        let id = self.with_conn(|c| {
            c.prepare_cached(
                "INSERT INTO users (username, username_key, password_hash, nickname, created_at) \
                 VALUES (?1, ?2, ?3, ?1, ?4)",
            )?
            .execute(params![username, key, password_hash, now])?;
            Ok(c.last_insert_rowid())
        })?;
        Ok(User {
            id: u64::try_from(id)
                .map_err(|_| StoreError::Other(format!("negative user id {id}")))?,
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            nickname: username.to_owned(),
            avatar: String::new(),
            sex: 0,
            status: 0,
            realname_verified: false,
            created_at: now,
        })
    }

    fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let key = username_key(username);
        self.with_conn(|c| {
            c.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username_key = ?1"
            ))?
            .query_row(params![key], user_from_row)
            .optional()
        })
    }

    fn user_by_id(&self, id: u64) -> Result<Option<User>, StoreError> {
        // SQLite ids are i64: a larger id cannot exist.
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.with_conn(|c| {
            c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
                .query_row(params![id], user_from_row)
                .optional()
        })
    }

    fn replace_password_hash(&self, id: u64, old: &str, new: &str) -> Result<bool, StoreError> {
        check_password_hash(new)?;
        let Ok(id) = i64::try_from(id) else {
            return Ok(false);
        };
        self.with_conn(|c| {
            c.prepare_cached(
                "UPDATE users SET password_hash = ?1 WHERE id = ?2 AND password_hash = ?3",
            )?
            .execute(params![new, id, old])
            .map(|n| n == 1)
        })
    }

    fn user_status(&self, id: u64) -> Result<UserStatus, StoreError> {
        // SQLite ids are i64: a larger id cannot exist.
        let Ok(id) = i64::try_from(id) else {
            return Ok(UserStatus::Missing);
        };
        let row: Option<Option<i64>> = self.with_conn(|c| {
            c.prepare_cached(
                "SELECT b.until FROM users u \
                 LEFT JOIN user_bans b ON b.user_id = u.id WHERE u.id = ?1",
            )?
            .query_row(params![id], |r| r.get(0))
            .optional()
        })?;
        Ok(row.map_or(UserStatus::Missing, UserStatus::with_ban))
    }

    fn ban_user(&self, id: u64, until: i64, reason: &str, now: i64) -> Result<(), StoreError> {
        check_ban_reason(reason)?;
        let Ok(id) = i64::try_from(id) else {
            return Ok(());
        };
        self.with_conn(|c| {
            c.prepare_cached(
                "INSERT INTO user_bans (user_id, until, reason, created_at) \
                     SELECT id, ?2, ?3, ?4 FROM users WHERE id = ?1 \
                     ON CONFLICT (user_id) DO UPDATE SET until = excluded.until, \
                     reason = excluded.reason, created_at = excluded.created_at",
            )?
            .execute(params![id, until, reason, now])?;
            Ok(())
        })
    }

    fn unban_user(&self, id: u64) -> Result<(), StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(());
        };
        self.with_conn(|c| {
            c.prepare_cached("DELETE FROM user_bans WHERE user_id = ?1")?
                .execute(params![id])?;
            Ok(())
        })
    }

    fn revoke_session(&self, sid: &str, end: i64) -> Result<(), StoreError> {
        check_session_id(sid)?;
        self.with_conn(|c| {
            c.prepare_cached(
                "INSERT INTO revoked_sessions (sid, ends_at) VALUES (?1, ?2) \
                 ON CONFLICT (sid) DO UPDATE SET ends_at = max(ends_at, excluded.ends_at)",
            )?
            .execute(params![sid, end])?;
            Ok(())
        })
    }

    fn revoked_sessions(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.with_conn(|c| {
            c.prepare_cached("DELETE FROM revoked_sessions WHERE ends_at <= ?1")?
                .execute(params![now])?;
            let mut stmt = c.prepare_cached(
                "SELECT sid, ends_at FROM revoked_sessions WHERE ends_at > ?1 ORDER BY ends_at, sid",
            )?;
            let rows = stmt.query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.query_row("SELECT version FROM schema_version WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_records_the_current_version() {
        let insert = format!("VALUES (1, {})", super::super::SCHEMA_VERSION);
        assert!(SCHEMA.contains(&insert));
    }
}
