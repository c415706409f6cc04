//! Persistence for weim.
//!
//! [`Store`] is everything weim keeps on disk. Two implementations pass the
//! same conformance suite (`tests/store/`) and must behave identically:
//! [`SqliteStore`] (embedded, zero set-up, the single-node default) and
//! [`MysqlStore`] (MySQL 8 / MariaDB 10.11, schema in `database.sql`).
//!
//! Every method blocks: only worker threads call the store, never a reactor.
//! Implementations are internally pooled, so one store is shared by all
//! workers behind an `Arc<dyn Store>`.
//!
//! Rules both backends follow, so that switching backend changes nothing a
//! client can see:
//! - Usernames are unique **case-insensitively** ("Alice" and "alice" are the
//!   same account) and otherwise compared exactly (no accent folding, no
//!   trailing-space padding). The username is stored as typed; uniqueness and
//!   look-ups go through [`username_key`], computed here in Rust and stored in
//!   a byte-compared column, so the database collation plays no part.
//! - Lengths are checked here before the database sees a value (see the
//!   `MAX_*` constants), so an over-long value is the same error everywhere
//!   instead of a silent truncation on a non-strict MySQL server.
//! - Times are unix seconds (`i64`); no database time functions are used.
//!
//! Adding to the schema: new tables go into both schemas (`database.sql` and
//! the SQLite schemas in `sqlite/`) as `CREATE TABLE IF NOT EXISTS`; a change
//! to an existing table needs a migration step in both backends and a bump of
//! [`SCHEMA_VERSION`].

mod import;
pub mod messages;
mod mysql;
mod profile;
mod social;
mod sqlite;

pub use self::import::{
    Import, ImportRecord, ImportedFriend, ImportedFriendRequest, ImportedJoinRequest,
    ImportedMember, ImportedUser, UsersImported, MAX_IMPORT_SOURCE_LEN,
};
pub use self::messages::{Feed, Message, Messages, NewMessage};
pub use self::mysql::{open_mysql, MysqlStore};
pub use self::profile::{
    Area, Changed, Located, Profiles, RealName, MAX_AVATAR_CHARS, MAX_NICKNAME_CHARS,
};
pub use self::social::{
    group_name_key, FoundGroup, FriendRequest, Group, JoinHandled, JoinRequest, Left, Member,
    Membership, Profile, Social, ACCEPTED, MAX_CHANNEL_CHARS, MAX_GROUP_NAME_CHARS,
    MAX_REASON_CHARS, PENDING, REJECTED,
};
pub use self::sqlite::{open_sqlite, SqliteStore};

use std::fmt;

/// A stored account.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Account id, assigned by the store, never reused.
    pub id: u64,
    /// The username as registered (its original case is kept).
    pub username: String,
    /// The password's slow salted hash (PHC string); never the password.
    pub password_hash: String,
    /// Display name; the username until changed.
    pub nickname: String,
    /// Avatar URL or file name; empty when none.
    pub avatar: String,
    /// 0 unknown; other values are defined by the protocol.
    pub sex: i32,
    /// Account status as old clients read it (weim's accounts 0, imported
    /// weIm-go accounts keep theirs); it restricts nothing: bans do
    /// ([`Accounts::user_status`]).
    pub status: i32,
    /// Whether a real-name verification succeeded.
    pub realname_verified: bool,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

/// Whether an account may be signed in (see [`Accounts::user_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// It exists and is not banned.
    Active,
    /// No account has this id.
    Missing,
    /// It exists and was banned (`users/ban`) until this unix second (0:
    /// for ever); [`UserStatus::active_at`] says whether that is over.
    Banned {
        /// End of the ban, unix seconds; 0 = for ever.
        until: i64,
    },
}

impl UserStatus {
    /// Whether the account may be signed in at `now` (unix seconds): active,
    /// or banned until a second already past.
    pub fn active_at(self, now: i64) -> bool {
        match self {
            UserStatus::Active => true,
            UserStatus::Banned { until } => until != 0 && until <= now,
            UserStatus::Missing => false,
        }
    }

    /// The status of an existing account with, if any, a ban until
    /// `ban_until`.
    pub(crate) fn with_ban(ban_until: Option<i64>) -> UserStatus {
        match ban_until {
            Some(until) => UserStatus::Banned { until },
            None => UserStatus::Active,
        }
    }
}

/// Why a store call failed.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// A unique key is already taken (e.g. the username exists).
    Conflict,
    /// The database cannot be reached or is overloaded (connection refused or
    /// lost, lock wait timed out, disk full...): callers answer 503.
    Unavailable(String),
    /// Anything else: a bug, corrupt data, an invalid argument or setting.
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("store: unique key already taken"),
            StoreError::Unavailable(msg) => write!(f, "store unavailable: {msg}"),
            StoreError::Other(msg) => write!(f, "store error: {msg}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Everything weim persists, one trait per concern. Implementations are
/// `Send + Sync` and internally pooled: many worker threads call them at once.
pub trait Store: Accounts + Social + Messages + Profiles + Import + Send + Sync {}

impl<T: Accounts + Social + Messages + Profiles + Import + Send + Sync> Store for T {}

/// Accounts and revoked sessions.
pub trait Accounts {
    /// Creates a user with nickname = username, avatar "", sex 0, status 0,
    /// not verified. `Err(Conflict)` if the username exists, compared
    /// case-insensitively (unique index, so two racing calls cannot both
    /// succeed). `Err(Other)` if the username is longer than
    /// [`MAX_USERNAME_CHARS`] or the hash longer than [`MAX_PASSWORD_HASH_CHARS`].
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<User, StoreError>;

    /// The user with this username, compared case-insensitively.
    fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError>;

    /// The user with this id.
    fn user_by_id(&self, id: u64) -> Result<Option<User>, StoreError>;

    /// Replaces a user's password hash (at most
    /// [`MAX_PASSWORD_HASH_CHARS`]) if it still is `old`, so that of two
    /// logins upgrading the same hash one wins; `true` when replaced.
    fn replace_password_hash(&self, id: u64, old: &str, new: &str) -> Result<bool, StoreError>;

    /// Whether the account with this id may be signed in: [`UserStatus`]
    /// (one primary-key look-up). Every check of a signed-in user goes
    /// through here, so a further restriction of accounts is one more
    /// column read by this call.
    fn user_status(&self, id: u64) -> Result<UserStatus, StoreError>;

    /// Bans the user until `until` (unix seconds, 0 = for ever) for
    /// `reason` (at most [`MAX_BAN_REASON_CHARS`] characters), replacing an
    /// earlier ban; nothing when no account has this id.
    fn ban_user(&self, id: u64, until: i64, reason: &str, now: i64) -> Result<(), StoreError>;

    /// Lifts the user's ban, if any.
    fn unban_user(&self, id: u64) -> Result<(), StoreError>;

    /// Remembers a revoked session (its id string, at most
    /// [`MAX_SESSION_ID_LEN`] ASCII characters, compared exactly) until
    /// `end` (unix seconds). Revoking twice is Ok and keeps the later end.
    fn revoke_session(&self, sid: &str, end: i64) -> Result<(), StoreError>;

    /// Revoked sessions still unexpired at `now` (those with `end > now`: a
    /// session is over at its `end` second), ordered by `end` then `sid`.
    /// Deletes the expired ones.
    fn revoked_sessions(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError>;

    /// Cheap liveness check for /healthz: one round trip to the database.
    fn ping(&self) -> Result<(), StoreError>;
}

/// Longest accepted username, in characters (`users.username` column size).
pub const MAX_USERNAME_CHARS: usize = 64;
/// Longest accepted ban reason, in characters.
pub const MAX_BAN_REASON_CHARS: usize = 255;
/// Longest accepted password hash, in characters.
pub const MAX_PASSWORD_HASH_CHARS: usize = 255;
/// Longest accepted revoked-session id, in bytes (ASCII only).
pub const MAX_SESSION_ID_LEN: usize = 128;

/// Version of the schema this build writes. Both backends record it in the
/// `schema_version` table and refuse a database written by a newer weim.
pub const SCHEMA_VERSION: i64 = 1;

/// The key that makes usernames unique case-insensitively: the Unicode
/// lowercase of the name. Stored next to the username; changing this
/// function needs a migration that recomputes every stored key.
pub fn username_key(username: &str) -> String {
    username.to_lowercase()
}

/// The user columns, in the order both backends read them into a [`User`].
pub(crate) const USER_COLUMNS: &str =
    "id, username, password_hash, nickname, avatar, sex, status, realname_verified, created_at";

/// Checks the arguments of [`Accounts::create_user`].
pub(crate) fn check_new_user(username: &str, password_hash: &str) -> Result<(), StoreError> {
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(StoreError::Other(format!(
            "username longer than {MAX_USERNAME_CHARS} characters"
        )));
    }
    check_password_hash(password_hash)
}

/// Checks a password hash against the column size.
pub(crate) fn check_password_hash(password_hash: &str) -> Result<(), StoreError> {
    if password_hash.chars().count() > MAX_PASSWORD_HASH_CHARS {
        return Err(StoreError::Other(format!(
            "password hash longer than {MAX_PASSWORD_HASH_CHARS} characters"
        )));
    }
    Ok(())
}

/// Checks the reason given to [`Accounts::ban_user`].
pub(crate) fn check_ban_reason(reason: &str) -> Result<(), StoreError> {
    if reason.chars().count() > MAX_BAN_REASON_CHARS {
        return Err(StoreError::Other(format!(
            "ban reason must be at most {MAX_BAN_REASON_CHARS} characters"
        )));
    }
    Ok(())
}

/// Checks the session id given to [`Accounts::revoke_session`].
pub(crate) fn check_session_id(sid: &str) -> Result<(), StoreError> {
    if sid.len() > MAX_SESSION_ID_LEN || !sid.is_ascii() {
        return Err(StoreError::Other(format!(
            "session id must be at most {MAX_SESSION_ID_LEN} ASCII characters"
        )));
    }
    Ok(())
}

/// Accepts the schema version found in a database after the schema was
/// applied. Later versions will run their migrations before this check.
pub(crate) fn check_schema_version(found: i64) -> Result<(), StoreError> {
    match found.cmp(&SCHEMA_VERSION) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(StoreError::Other(format!(
            "database schema version {found} is newer than this weim ({SCHEMA_VERSION})"
        ))),
        std::cmp::Ordering::Less => Err(StoreError::Other(format!(
            "database schema version {found} has no migration to {SCHEMA_VERSION}"
        ))),
    }
}

/// Pool size used when the configuration says 0: one connection per worker
/// thread at the default worker count (2 × cores, at least 4), at most 32.
pub(crate) fn default_pool_size() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).clamp(4, 32)
}
