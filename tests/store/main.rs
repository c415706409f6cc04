//! Conformance suite of the weim store: accounts and revoked sessions
//! (`accounts`), friends, groups and user search (`social`), messages
//! (`messages`), nicknames, real names and locations (`profile`), rows
//! imported with their ids (`import`). Every check is written once against
//! `&dyn Store` (a check that needs what the store API cannot do also gets
//! `&Raw`, direct access to the database under the store) and run on both
//! backends:
//! - SQLite: a fresh database file in a temporary directory per test;
//! - MySQL/MariaDB: `TEST_MYSQL_URL` (default
//!   `mysql://root@127.0.0.1:3306/weim_test`); the database is created if
//!   missing. It is shared by parallel tests and runs, so checks use unique
//!   usernames, token signatures, group names and places (every location
//!   check draws its own spot of the earth) and never empty a table.
//!
//! Checks of one backend alone (reopening, SQLite's journal mode and schema
//! version, MySQL connection errors) are in `backends`.
//!
//! Run: `cargo test --release --test store`; one part of it, e.g.
//! `cargo test --release --test store -- social`.

#[path = "../common/mod.rs"]
mod common;

mod accounts;
mod backends;
mod import;
mod messages;
mod profile;
mod social;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::mysql_url;
use mysql::prelude::Queryable;
use weim::store::{open_mysql, open_sqlite, MysqlStore, Store};

/// Connections of every store under test: one for each thread of the
/// racing checks.
const POOL: usize = 8;

/// Direct access to the database under a store, for what the store API
/// cannot do yet (setting a nickname).
pub enum Raw {
    Sqlite(PathBuf),
    Mysql,
}

impl Raw {
    pub fn set_nickname(&self, user: u64, nickname: &str) {
        match self {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open raw connection");
                conn.execute(
                    "UPDATE users SET nickname = ?1 WHERE id = ?2",
                    rusqlite::params![nickname, user as i64],
                )
                .expect("set nickname");
            }
            Raw::Mysql => {
                let mut conn = mysql::Conn::new(mysql::Opts::from_url(&mysql_url()).unwrap())
                    .expect("raw MySQL connection");
                conn.exec_drop(
                    "UPDATE users SET nickname = ? WHERE id = ?",
                    (nickname, user),
                )
                .expect("set nickname");
            }
        }
    }
}

/// Where a test's SQLite database lives in its temporary directory.
pub fn sqlite_path(dir: &tempfile::TempDir) -> PathBuf {
    // A nested path: open_sqlite must create the missing directories.
    dir.path().join("data").join("sub").join("weim.db")
}

/// One store shared by all MySQL tests of this process, as in weim.
pub fn mysql_store() -> &'static MysqlStore {
    static STORE: OnceLock<MysqlStore> = OnceLock::new();
    STORE.get_or_init(|| {
        open_mysql(&mysql_url(), POOL).unwrap_or_else(|e| panic!("open MySQL store: {e}"))
    })
}

/// A conformance check: a function of the store (`Args = ()`), or of the
/// store and raw access to its database (`Args = Raw`).
trait Check<Args> {
    fn run(self, store: &dyn Store, raw: &Raw);
}

impl<F: FnOnce(&dyn Store)> Check<()> for F {
    fn run(self, store: &dyn Store, _: &Raw) {
        self(store)
    }
}

impl<F: FnOnce(&dyn Store, &Raw)> Check<Raw> for F {
    fn run(self, store: &dyn Store, raw: &Raw) {
        self(store, raw)
    }
}

/// Runs `check` on a fresh SQLite database.
fn on_sqlite<Args>(check: impl Check<Args>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = sqlite_path(&dir);
    let store = open_sqlite(&path, POOL).expect("open SQLite store");
    check.run(&store, &Raw::Sqlite(path));
}

/// Runs `check` on the shared MySQL/MariaDB store.
fn on_mysql<Args>(check: impl Check<Args>) {
    check.run(mysql_store(), &Raw::Mysql);
}

/// One test per check and backend: `sqlite_suite::<module>::<check>` and
/// `mysql_suite::<module>::<check>`.
macro_rules! conformance {
    ($($module:ident: [$($check:ident),* $(,)?]),* $(,)?) => {
        /// The suite on SQLite, one fresh database per test.
        mod sqlite_suite {
            $(
                mod $module {
                    use crate::$module as checks;
                    $(
                        #[test]
                        fn $check() {
                            crate::on_sqlite(checks::$check);
                        }
                    )*
                }
            )*
        }
        /// The suite on MySQL/MariaDB, one shared store.
        mod mysql_suite {
            $(
                mod $module {
                    use crate::$module as checks;
                    $(
                        #[test]
                        fn $check() {
                            crate::on_mysql(checks::$check);
                        }
                    )*
                }
            )*
        }
    };
}

conformance!(
    accounts: [
        create_and_lookup,
        missing_users_are_none,
        ids_are_distinct_and_increasing,
        duplicate_username_conflicts,
        racing_creates_one_wins,
        parallel_distinct_creates,
        unicode_roundtrip,
        over_long_values_are_rejected,
        user_status_of_accounts,
        bans_are_kept_replaced_and_lifted,
        revoke_and_expire,
        double_revoke_keeps_later_expiry,
        ping_answers,
        password_hash_is_replaced_only_from_the_expected_one,
    ],
    import: [
        rows_keep_their_ids_once,
        conflicts_refuse_the_whole_batch,
    ],
    messages: [
        messages_are_stored_in_order_and_once_per_cid,
        friend_history_pages_newest_first,
        group_history_starts_at_the_join,
        withdrawn_messages_lose_their_body,
        pending_feed_follows_the_cursor,
    ],
    social: [
        user_search_is_literal_and_paginated,
        friend_request_accept_delete,
        friendships_answer_each_pair,
        friend_request_reject_and_retry,
        crossed_requests_are_settled_together,
        friend_request_lengths_are_checked,
        racing_requests_one_pending,
        racing_accepts_one_wins,
        racing_crossed_accepts_one_wins,
        friends_are_paginated_by_id,
        groups_create_search_list,
        groups_by_ids_as_search_finds_them,
        join_requests_flow,
        racing_join_accepts_one_wins,
        leaving_and_kicking,
    ],
    profile: [
        nickname_and_avatar,
        realname_is_unique_per_number,
        racing_verifications_one_wins,
        locations_in_a_box,
        boxes_across_the_antimeridian,
        users_by_ids,
    ],
);
