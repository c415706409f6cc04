//! MySQL 8 / MariaDB 10.11 backend of [`Store`], on the `mysql` crate's
//! connection pool. The schema is the top-level `database.sql`, compiled in
//! and applied statement by statement at open.
//!
//! Pool settings: connections are not reset when returned to the pool (weim
//! keeps no session state: no temporary tables, variables or open
//! transactions), which keeps the per-connection prepared-statement cache
//! alive; a pooled connection is pinged before use, so a restarted server is
//! reconnected to transparently. Connect, read and write time-outs default to
//! [`CONNECT_TIMEOUT`] and [`IO_TIMEOUT`] unless the URL sets them.

mod import;
mod messages;
mod profile;
mod social;

use std::time::Duration;

use ::mysql::prelude::Queryable;
use ::mysql::{DriverError, Opts, OptsBuilder, Pool, PoolConstraints, PooledConn, Row};

use super::{
    check_ban_reason, check_new_user, check_password_hash, check_schema_version, check_session_id,
    default_pool_size, username_key, Accounts, StoreError, User, UserStatus, USER_COLUMNS,
};

/// The MySQL schema, applied at every open (idempotent).
const DATABASE_SQL: &str = include_str!("../../../database.sql");

/// Default TCP connect time-out to the database server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default socket read and write time-out on a database connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Server error codes meaning "try again later" rather than a bad request:
/// too many connections (1040), server shutting down (1053), lock wait
/// time-out (1205), deadlock (1213), read-only server (1290, 1836), connection
/// killed (MariaDB 1927), statement time-out (MySQL 3024, MariaDB 1969).
const UNAVAILABLE_CODES: &[u16] = &[1040, 1053, 1205, 1213, 1290, 1836, 1927, 1969, 3024];
/// Duplicate entry for a unique key.
const ER_DUP_ENTRY: u16 = 1062;
/// The statement was rolled back to break a deadlock.
const ER_LOCK_DEADLOCK: u16 = 1213;
/// How many times a deadlock victim is run again before giving up.
const DEADLOCK_RETRIES: u64 = 3;
/// Most values in one `IN (…)` list.
const IN_CHUNK: usize = 500;

/// `?, ?, …`: `n` placeholders for an `IN (…)` list.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// [`Store`] on a MySQL or MariaDB database. Cheap to share: wrap it in an
/// `Arc`.
#[derive(Debug)]
pub struct MysqlStore {
    pool: Pool,
}

/// Connects to `url` (`mysql://user:pass@host:port/db`; the database must
/// exist), applies `database.sql` and keeps a pool of up to `pool_size`
/// connections (0 = one per default worker thread). A server that cannot be
/// reached is `Err(Unavailable)`, a bad URL `Err(Other)`.
pub fn open_mysql(url: &str, pool_size: usize) -> Result<MysqlStore, StoreError> {
    let opts =
        Opts::from_url(url).map_err(|e| StoreError::Other(format!("invalid MySQL URL: {e}")))?;
    if opts.get_db_name().is_none() {
        return Err(StoreError::Other("the MySQL URL names no database".into()));
    }
    let max = if pool_size == 0 {
        default_pool_size()
    } else {
        pool_size
    };
    let constraints = PoolConstraints::new(max.min(2), max)
        .ok_or_else(|| StoreError::Other(format!("invalid MySQL pool size {max}")))?;
    let pool_opts = opts
        .get_pool_opts()
        .clone()
        .with_constraints(constraints)
        .with_reset_connection(false)
        .with_check_health(true);
    let connect_timeout = opts.get_tcp_connect_timeout().or(Some(CONNECT_TIMEOUT));
    let read_timeout = opts.get_read_timeout().copied().or(Some(IO_TIMEOUT));
    let write_timeout = opts.get_write_timeout().copied().or(Some(IO_TIMEOUT));
    let builder = OptsBuilder::from_opts(opts)
        .pool_opts(pool_opts)
        .tcp_connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .write_timeout(write_timeout);
    let pool = Pool::new(builder).map_err(map_err)?;
    let store = MysqlStore { pool };
    store.apply_schema()?;
    Ok(store)
}

/// Splits `database.sql` into statements: a statement ends with `;` at the
/// end of a line; blank lines and lines starting with `--` are skipped.
fn schema_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        if let Some(last) = trimmed.strip_suffix(';') {
            current.push_str(last);
            statements.push(std::mem::take(&mut current));
        } else {
            current.push_str(trimmed);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        statements.push(current);
    }
    statements
}

/// Maps a driver error: duplicate key is `Conflict`; I/O, lost connections,
/// pool time-outs and the server's "try later" codes are `Unavailable`.
fn map_err(e: ::mysql::Error) -> StoreError {
    match &e {
        ::mysql::Error::MySqlError(me) if me.code == ER_DUP_ENTRY => StoreError::Conflict,
        ::mysql::Error::MySqlError(me) if UNAVAILABLE_CODES.contains(&me.code) => {
            StoreError::Unavailable(e.to_string())
        }
        ::mysql::Error::IoError(_) | ::mysql::Error::CodecError(_) => {
            StoreError::Unavailable(e.to_string())
        }
        // Driver errors about reaching the server or a broken stream; the
        // others (bad parameters, unsupported server or auth plug-in) are bugs
        // or configuration errors.
        ::mysql::Error::DriverError(
            DriverError::ConnectTimeout
            | DriverError::CouldNotConnect(_)
            | DriverError::Timeout
            | DriverError::PacketOutOfSync
            | DriverError::UnexpectedPacket
            | DriverError::PoisonedPoolMutex,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Other(e.to_string()),
    }
}

/// Reads a row selected with [`USER_COLUMNS`].
fn user_from_row(row: Row) -> Result<User, StoreError> {
    let (id, username, password_hash, nickname, avatar, sex, status, realname_verified, created_at) =
        ::mysql::from_row_opt::<(u64, String, String, String, String, i32, i32, bool, i64)>(row)
            .map_err(|e| StoreError::Other(format!("unexpected users row: {e}")))?;
    Ok(User {
        id,
        username,
        password_hash,
        nickname,
        avatar,
        sex,
        status,
        realname_verified,
        created_at,
    })
}

impl MysqlStore {
    /// A pooled connection, waiting at most [`POOL_WAIT`] for a free one.
    pub(super) fn conn(&self) -> Result<PooledConn, StoreError> {
        self.pool.try_get_conn(POOL_WAIT).map_err(map_err)
    }

    /// Runs every statement of `database.sql`, then checks the version.
    fn apply_schema(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        for statement in schema_statements(DATABASE_SQL) {
            conn.query_drop(&statement).map_err(|e| match map_err(e) {
                StoreError::Other(msg) => {
                    StoreError::Other(format!("applying database.sql: {msg}"))
                }
                other => other,
            })?;
        }
        profile::apply_schema(&mut conn).map_err(map_err)?;
        let version: Option<i64> = conn
            .exec_first("SELECT version FROM schema_version WHERE id = ?", (1,))
            .map_err(map_err)?;
        match version {
            Some(v) => check_schema_version(v),
            None => Err(StoreError::Other("schema_version has no row".into())),
        }
    }

    /// Runs `op` on a pooled connection. When InnoDB picks the statement as
    /// a deadlock victim it has rolled back its whole transaction, so `op`
    /// (one autocommitted statement, several that are each safe to repeat,
    /// or one transaction) is run again, up to [`DEADLOCK_RETRIES`] times;
    /// concurrent purges and inserts of revoked sessions from several nodes,
    /// and crossed friend-request accepts, do meet that way.
    pub(super) fn run<T>(
        &self,
        mut op: impl FnMut(&mut PooledConn) -> ::mysql::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let mut retries = 0;
        loop {
            match op(&mut conn) {
                Err(::mysql::Error::MySqlError(e))
                    if e.code == ER_LOCK_DEADLOCK && retries < DEADLOCK_RETRIES =>
                {
                    retries += 1;
                    log::debug!("store: deadlock victim, retry {retries}: {e}");
                    std::thread::sleep(Duration::from_millis(2 * retries));
                }
                result => return result.map_err(map_err),
            }
        }
    }

    /// The user selected by `condition` (a `WHERE` clause with one `?`).
    fn user_where(
        &self,
        condition: &str,
        param: ::mysql::Value,
    ) -> Result<Option<User>, StoreError> {
        let query = format!("SELECT {USER_COLUMNS} FROM users WHERE {condition}");
        let row: Option<Row> = self.run(|c| c.exec_first(&query, (param.clone(),)))?;
        row.map(user_from_row).transpose()
    }
}

impl Accounts for MysqlStore {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<User, StoreError> {
        check_new_user(username, password_hash)?;
        let key = username_key(username);
        let id = self.run(|c| {
            c.exec_drop(
                "INSERT INTO users (username, username_key, password_hash, nickname, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
                (username, key.as_bytes(), password_hash, username, now),
            )?;
            Ok(c.last_insert_id())
        })?;
        Ok(User {
            id,
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
        let key = username_key(username).into_bytes();
        self.user_where("username_key = ?", key.into())
    }

    fn user_by_id(&self, id: u64) -> Result<Option<User>, StoreError> {
        self.user_where("id = ?", id.into())
    }

    fn replace_password_hash(&self, id: u64, old: &str, new: &str) -> Result<bool, StoreError> {
        check_password_hash(new)?;
        self.run(|c| {
            c.exec_drop(
                "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
                (new, id, old),
            )?;
            Ok(c.affected_rows() == 1)
        })
    }

    fn user_status(&self, id: u64) -> Result<UserStatus, StoreError> {
        let row: Option<Option<i64>> = self.run(|c| {
            c.exec_first(
                "SELECT b.until FROM users u \
                 LEFT JOIN user_bans b ON b.user_id = u.id WHERE u.id = ?",
                (id,),
            )
        })?;
        Ok(row.map_or(UserStatus::Missing, UserStatus::with_ban))
    }

    fn ban_user(&self, id: u64, until: i64, reason: &str, now: i64) -> Result<(), StoreError> {
        check_ban_reason(reason)?;
        self.run(|c| {
            c.exec_drop(
                "INSERT INTO user_bans (user_id, until, reason, created_at) \
                 SELECT id, ?, ?, ? FROM users WHERE id = ? \
                 ON DUPLICATE KEY UPDATE until = VALUES(until), reason = VALUES(reason), \
                 created_at = VALUES(created_at)",
                (until, reason, now, id),
            )
        })
    }

    fn unban_user(&self, id: u64) -> Result<(), StoreError> {
        self.run(|c| c.exec_drop("DELETE FROM user_bans WHERE user_id = ?", (id,)))
    }

    fn revoke_session(&self, sid: &str, end: i64) -> Result<(), StoreError> {
        check_session_id(sid)?;
        self.run(|c| {
            c.exec_drop(
                "INSERT INTO revoked_sessions (sid, ends_at) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE ends_at = GREATEST(ends_at, VALUES(ends_at))",
                (sid.as_bytes(), end),
            )
        })
    }

    fn revoked_sessions(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<Row> = self.run(|c| {
            c.exec_drop("DELETE FROM revoked_sessions WHERE ends_at <= ?", (now,))?;
            c.exec(
                "SELECT sid, ends_at FROM revoked_sessions WHERE ends_at > ? ORDER BY ends_at, sid",
                (now,),
            )
        })?;
        rows.into_iter()
            .map(|row| {
                ::mysql::from_row_opt::<(String, i64)>(row)
                    .map_err(|e| StoreError::Other(format!("unexpected revoked_sessions row: {e}")))
            })
            .collect()
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| c.query_drop("SELECT 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_at_line_ends() {
        let sql = "-- comment; with a semicolon;\nCREATE TABLE a (\n  x INT -- a column\n);\n\nINSERT INTO a VALUES (1);\n";
        let statements = schema_statements(sql);
        assert_eq!(statements.len(), 2);
        assert!(statements[0].starts_with("CREATE TABLE a ("));
        assert_eq!(statements[1], "INSERT INTO a VALUES (1)");
    }

    #[test]
    fn database_sql_records_the_current_version() {
        let insert = format!("VALUES (1, {})", super::super::SCHEMA_VERSION);
        assert!(DATABASE_SQL.contains(&insert));
    }
}
