//! Conformance suite of the weim store. Every check is written once against
//! `&dyn Store` and run on both backends:
//! - SQLite: a fresh database file in a temporary directory per test;
//! - MySQL/MariaDB: `TEST_MYSQL_URL` (default
//!   `mysql://root@127.0.0.1:3306/weim_test`); the database is created if
//!   missing. It is shared by parallel tests and runs, so checks use unique
//!   usernames and token signatures and never empty a table.
//!
//! Run: `cargo test --release --test store`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql::prelude::Queryable;
use weim::store::messages::{OPE_FRIEND, STATUS_WITHDRAWN};
use weim::store::{
    open_mysql, open_sqlite, Accounts, Feed, MysqlStore, NewMessage, SqliteStore, Store,
    StoreError, MAX_USERNAME_CHARS,
};

const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/weim_test";

// ---------------------------------------------------------------- helpers

fn unix_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970");
    i64::try_from(since.as_secs()).expect("time fits i64")
}

/// A name no other test or run uses: prefix, process id, time and a counter.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_nanos();
    format!(
        "{prefix}{:x}_{:x}_{}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Token checks purge expired tokens of the whole table: in one process they
/// take turns, so one check's purge cannot race another's assertions.
fn token_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sqlite_path(dir: &tempfile::TempDir) -> PathBuf {
    // A nested path: open_sqlite must create the missing directories.
    dir.path().join("data").join("sub").join("weim.db")
}

fn sqlite_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_sqlite(&sqlite_path(&dir), 4).expect("open SQLite store");
    (dir, store)
}

fn mysql_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_owned())
}

/// Creates the test database named in `url` if it does not exist.
fn ensure_mysql_database(url: &str) {
    let opts = mysql::Opts::from_url(url).expect("TEST_MYSQL_URL is a valid MySQL URL");
    let db = opts
        .get_db_name()
        .expect("TEST_MYSQL_URL names a database")
        .to_owned();
    assert!(
        db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "test database name {db:?} must be [A-Za-z0-9_]"
    );
    let server = mysql::OptsBuilder::from_opts(opts)
        .db_name(None::<String>)
        .tcp_connect_timeout(Some(Duration::from_secs(5)));
    let mut conn = mysql::Conn::new(server).unwrap_or_else(|e| {
        panic!(
            "cannot reach the MySQL/MariaDB server of {url} ({e}); start it \
             (start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd) \
             or set TEST_MYSQL_URL"
        )
    });
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .expect("create the test database");
}

/// One store shared by all MySQL tests of this process, as in weim.
fn mysql_store() -> &'static MysqlStore {
    static STORE: OnceLock<MysqlStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let url = mysql_url();
        ensure_mysql_database(&url);
        open_mysql(&url, 8).unwrap_or_else(|e| panic!("open MySQL store: {e}"))
    })
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    port
}

// ------------------------------------------------- checks (backend-agnostic)

fn create_and_lookup(store: &dyn Store) {
    let name = unique("cl_");
    let now = unix_now();
    let user = store
        .create_user(&name, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", now)
        .expect("create user");
    assert!(user.id > 0);
    assert_eq!(user.username, name);
    assert_eq!(
        user.password_hash,
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
    );
    assert_eq!(user.nickname, name);
    assert_eq!(user.avatar, "");
    assert_eq!(user.sex, 0);
    assert_eq!(user.status, 0);
    assert!(!user.realname_verified);
    assert_eq!(user.created_at, now);

    let by_name = store.user_by_name(&name).expect("by name");
    assert_eq!(by_name.as_ref(), Some(&user));
    let by_id = store.user_by_id(user.id).expect("by id");
    assert_eq!(by_id, Some(user));
}

fn missing_users_are_none(store: &dyn Store) {
    assert_eq!(store.user_by_name(&unique("none_")).expect("by name"), None);
    assert_eq!(store.user_by_name("").expect("empty name"), None);
    assert_eq!(store.user_by_id(0).expect("id 0"), None);
    assert_eq!(store.user_by_id(u64::MAX).expect("id max"), None);
    assert_eq!(store.user_by_id(1 << 62).expect("large id"), None);
}

fn ids_are_distinct_and_increasing(store: &dyn Store) {
    let now = unix_now();
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            store
                .create_user(&unique("id_"), "h", now)
                .expect("create")
                .id
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");
}

fn duplicate_username_conflicts(store: &dyn Store) {
    let name = unique("Dup_Ab_");
    let now = unix_now();
    let first = store.create_user(&name, "h1", now).expect("first create");

    let again = store.create_user(&name, "h2", now + 1);
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    let upper = store.create_user(&name.to_uppercase(), "h3", now + 1);
    assert!(matches!(upper, Err(StoreError::Conflict)), "{upper:?}");
    let lower = store.create_user(&name.to_lowercase(), "h4", now + 1);
    assert!(matches!(lower, Err(StoreError::Conflict)), "{lower:?}");

    // The first account is untouched and found whatever the case.
    for probe in [name.clone(), name.to_uppercase(), name.to_lowercase()] {
        let found = store.user_by_name(&probe).expect("lookup");
        assert_eq!(found.as_ref(), Some(&first), "lookup of {probe:?}");
    }
    // Case-insensitive, but not accent-insensitive and not space-padded.
    let plain = unique("resume_");
    let accented = plain.replacen("resume", "résumé", 1);
    store.create_user(&plain, "h", now).expect("plain");
    store
        .create_user(&accented, "h", now)
        .expect("accented is another name");
    assert_eq!(
        store
            .user_by_name(&accented)
            .expect("lookup")
            .map(|u| u.username),
        Some(accented)
    );
    assert_eq!(
        store.user_by_name(&format!("{plain} ")).expect("padded"),
        None
    );
}

fn racing_creates_one_wins(store: &dyn Store) {
    const THREADS: usize = 8;
    let name = unique("race_");
    let now = unix_now();
    let barrier = Barrier::new(THREADS);
    let results: Vec<Result<u64, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (name, barrier) = (&name, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    store
                        .create_user(name, &format!("hash{i}"), now)
                        .map(|u| u.id)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let ok: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(ok.len(), 1, "exactly one create wins: {results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict))),
        "losers get Conflict: {results:?}"
    );
    let stored = store.user_by_name(&name).expect("lookup").expect("exists");
    assert_eq!(stored.id, ok[0]);
}

fn parallel_distinct_creates(store: &dyn Store) {
    const THREADS: usize = 6;
    const PER_THREAD: usize = 5;
    let now = unix_now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..PER_THREAD {
                    let name = unique("par_");
                    let user = store.create_user(&name, "h", now).expect("create");
                    let found = store.user_by_id(user.id).expect("lookup").expect("exists");
                    assert_eq!(found.username, name);
                }
            });
        }
    });
}

fn unicode_roundtrip(store: &dyn Store) {
    // 4-byte UTF-8 (emoji) needs utf8mb4 end to end.
    let name = format!("{}_张三_Ünïcødé_😀", unique("u_"));
    let now = unix_now();
    let user = store.create_user(&name, "h", now).expect("create");
    assert_eq!(user.nickname, name);
    let found = store.user_by_name(&name).expect("lookup").expect("exists");
    assert_eq!(found.username, name);
    assert_eq!(found.nickname, name);
    assert_eq!(store.user_by_id(user.id).expect("by id"), Some(found));

    // Case-insensitivity beyond ASCII.
    let upper = store.create_user(&name.to_uppercase(), "h", now);
    assert!(matches!(upper, Err(StoreError::Conflict)), "{upper:?}");
    let found = store.user_by_name(&name.to_uppercase()).expect("lookup");
    assert_eq!(found.map(|u| u.id), Some(user.id));
}

fn over_long_values_are_rejected(store: &dyn Store) {
    let now = unix_now();
    let base = unique("len_");
    let longest: String = base
        .chars()
        .chain(std::iter::repeat('é'))
        .take(MAX_USERNAME_CHARS)
        .collect();
    let user = store.create_user(&longest, "h", now).expect("longest name");
    assert_eq!(
        store
            .user_by_id(user.id)
            .expect("lookup")
            .map(|u| u.username),
        Some(longest.clone())
    );

    let too_long = format!("{longest}x");
    let r = store.create_user(&too_long, "h", now);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
    let r = store.create_user(&unique("len_"), &"h".repeat(256), now);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");

    let r = store.revoke_token(&"s".repeat(129), now + 60);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
    let r = store.revoke_token("sïg", now + 60);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
}

/// Expiry times are chosen so that a purge by any run (every run purges at
/// most at its own current time) can only delete tokens this check expects
/// to be gone, except in the instant between revoking `q` and listing
/// (retried).
fn revoke_and_expire(store: &dyn Store) {
    let _turn = token_lock();
    let now = unix_now();
    let has = |list: &[(String, i64)], sig: &str| list.iter().find(|(s, _)| s == sig).map(|t| t.1);

    // A revoked token is listed until its expiry.
    let live = unique("live.");
    let dead = unique("dead.");
    store.revoke_token(&live, now + 3600).expect("revoke live");
    store
        .revoke_token(&dead, now - 10)
        .expect("revoke already expired");
    let list = store.revoked_tokens(now).expect("list");
    assert_eq!(has(&list, &live), Some(now + 3600));
    assert_eq!(has(&list, &dead), None);
    assert!(
        list.iter().all(|(_, exp)| *exp > now),
        "only unexpired: {list:?}"
    );
    assert!(
        list.windows(2)
            .all(|w| (w[0].1, &w[0].0) <= (w[1].1, &w[1].0)),
        "ordered"
    );

    // Boundary: a token is expired at its exp second. Times in the past, so
    // that this purge cannot touch live tokens of other runs. Another run
    // purging at its current time between our revoke and our listing would
    // remove q too; that is retried, a store that purges q itself never
    // passes.
    let at = now - 200_000;
    let (p, q) = (0..10u64)
        .find_map(|attempt| {
            // Let a run in lock-step with this one get out of the way.
            let jitter = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()) % 20);
            std::thread::sleep(Duration::from_millis(attempt * (10 + jitter)));
            let p = unique("p.");
            let q = unique("q.");
            store.revoke_token(&p, at).expect("revoke p");
            store.revoke_token(&q, at + 1).expect("revoke q");
            let list = store.revoked_tokens(at).expect("list at boundary");
            assert_eq!(has(&list, &p), None, "exp == now is expired");
            assert_eq!(has(&list, &live), Some(now + 3600));
            (has(&list, &q) == Some(at + 1)).then_some((p, q))
        })
        .expect("exp == now + 1 is live");

    // Expired tokens are deleted, not just hidden: listing at an earlier
    // time afterwards does not bring them back.
    let list = store.revoked_tokens(at + 1).expect("list after q's expiry");
    assert_eq!(has(&list, &q), None);
    let list = store.revoked_tokens(at - 1).expect("list before");
    assert_eq!(has(&list, &p), None, "p was purged");
    assert_eq!(has(&list, &q), None, "q was purged");
    assert_eq!(has(&list, &dead), None, "dead was purged");
    assert_eq!(has(&list, &live), Some(now + 3600));

    // Signatures are compared exactly (case matters).
    let upper = live.to_uppercase();
    store
        .revoke_token(&upper, now + 3000)
        .expect("revoke upper-case twin");
    let list = store.revoked_tokens(now).expect("list");
    assert_eq!(has(&list, &live), Some(now + 3600));
    assert_eq!(has(&list, &upper), Some(now + 3000));
}

fn double_revoke_keeps_later_expiry(store: &dyn Store) {
    let _turn = token_lock();
    let now = unix_now();
    let sig = unique("twice.");
    store.revoke_token(&sig, now + 3600).expect("revoke");
    store.revoke_token(&sig, now + 3600).expect("revoke again");
    let count = |list: &[(String, i64)]| list.iter().filter(|(s, _)| *s == sig).count();
    let list = store.revoked_tokens(now).expect("list");
    assert_eq!(count(&list), 1);

    store.revoke_token(&sig, now + 7200).expect("later expiry");
    store
        .revoke_token(&sig, now + 1800)
        .expect("earlier expiry");
    let list = store.revoked_tokens(now).expect("list");
    assert_eq!(count(&list), 1);
    let exp = list.iter().find(|(s, _)| *s == sig).map(|t| t.1);
    assert_eq!(exp, Some(now + 7200), "the later expiry is kept");
}

fn ping_answers(store: &dyn Store) {
    store.ping().expect("ping");
}

/// Data written through one store is there when the database is opened
/// again (SQLite: the same file after closing; MySQL: a second pool).
fn reopen_keeps_data(open: &dyn Fn() -> Box<dyn Store>) {
    let now = unix_now();
    let name = unique("reopen_");
    let sig = unique("reopen.");
    let user = {
        let store = open();
        store.revoke_token(&sig, now + 3600).expect("revoke");
        store.create_user(&name, "h", now).expect("create")
    };
    let store = open();
    assert_eq!(
        store.user_by_id(user.id).expect("by id"),
        Some(user.clone())
    );
    assert_eq!(store.user_by_name(&name).expect("by name"), Some(user));
    let list = store.revoked_tokens(now).expect("list");
    assert!(list.contains(&(sig, now + 3600)));
    let again = store.create_user(&name, "h", now);
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
}

// ------------------------------------------------------------- messages

fn two_users(store: &dyn Store) -> (u64, u64) {
    let mut ids = [0; 2].map(|_| {
        store
            .create_user(&unique("mu_"), "hash", unix_now())
            .expect("create user")
            .id
    });
    ids.sort();
    (ids[0], ids[1])
}

fn friend_message<'a>(from: u64, to: u64, body: &'a str, cid: Option<&'a str>) -> NewMessage<'a> {
    NewMessage {
        from_id: from,
        to_id: to,
        ope: OPE_FRIEND,
        kind: 0,
        body,
        cid,
        now_ms: unix_now() * 1000,
    }
}

fn messages_are_stored_in_order_and_once_per_cid(store: &dyn Store) {
    let (a, b) = two_users(store);
    let stored = store
        .insert_messages(&[
            friend_message(a, b, "one", Some("c1")),
            friend_message(a, b, "two", None),
            friend_message(a, b, "one again", Some("c1")),
        ])
        .expect("insert batch");
    assert_eq!(stored.len(), 3);
    let (one, two, again) = (&stored[0], &stored[1], &stored[2]);
    assert!(one.1 && two.1, "first two are new");
    assert!(one.0.id < two.0.id, "ids follow the batch order");
    assert_eq!(
        (again.0.id, again.1),
        (one.0.id, false),
        "same cid: the earlier message"
    );
    assert_eq!(again.0.body, "one");
    let retry = store
        .insert_messages(&[friend_message(a, b, "retry", Some("c1"))])
        .expect("retry");
    assert_eq!((retry[0].0.id, retry[0].1), (one.0.id, false));
    // Another sender may use the same client id.
    let other = store
        .insert_messages(&[friend_message(b, a, "theirs", Some("c1"))])
        .expect("other sender");
    assert!(other[0].1);
    assert_eq!(
        store.message_by_id(two.0.id).expect("by id"),
        Some(two.0.clone())
    );
}

fn friend_history_pages_newest_first(store: &dyn Store) {
    let (a, b) = two_users(store);
    let (_, c) = two_users(store);
    let batch: Vec<NewMessage<'_>> = (0..5)
        .map(|i| {
            if i % 2 == 0 {
                friend_message(a, b, "ab", None)
            } else {
                friend_message(b, a, "ba", None)
            }
        })
        .collect();
    let ids: Vec<u64> = store
        .insert_messages(&batch)
        .expect("insert")
        .into_iter()
        .map(|(m, _)| m.id)
        .collect();
    store
        .insert_messages(&[friend_message(a, c, "elsewhere", None)])
        .expect("insert");
    let page = store.friend_history(b, a, None, 3).expect("history");
    let got: Vec<u64> = page.iter().map(|m| m.id).collect();
    assert_eq!(got, vec![ids[4], ids[3], ids[2]]);
    let rest = store
        .friend_history(a, b, Some(ids[2]), 10)
        .expect("history");
    let got: Vec<u64> = rest.iter().map(|m| m.id).collect();
    assert_eq!(got, vec![ids[1], ids[0]]);
}

fn withdrawn_messages_lose_their_body(store: &dyn Store) {
    let (a, b) = two_users(store);
    let m = store
        .insert_messages(&[friend_message(a, b, "oops", None)])
        .expect("insert")[0]
        .0
        .clone();
    assert!(store.withdraw_message(m.id).expect("withdraw"));
    assert!(!store.withdraw_message(m.id).expect("withdraw twice"));
    let after = store
        .message_by_id(m.id)
        .expect("by id")
        .expect("still there");
    assert_eq!((after.status, after.body.as_str()), (STATUS_WITHDRAWN, ""));
    assert!(!store.withdraw_message(u64::MAX / 2).expect("missing"));
}

fn pending_feed_follows_the_cursor(store: &dyn Store) {
    let (a, b) = two_users(store);
    let ids: Vec<u64> = store
        .insert_messages(&[
            friend_message(a, b, "1", None),
            friend_message(b, a, "mine", None),
            friend_message(a, b, "2", None),
            friend_message(a, b, "3", None),
        ])
        .expect("insert")
        .into_iter()
        .map(|(m, _)| m.id)
        .collect();
    let pending = |after| -> Vec<u64> {
        store
            .feed(b, after, 10, Feed::Pending)
            .expect("feed")
            .iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(
        pending(0),
        vec![ids[0], ids[2], ids[3]],
        "to b, oldest first"
    );
    store.withdraw_message(ids[2]).expect("withdraw");
    assert_eq!(pending(0), vec![ids[0], ids[3]], "withdrawn is not pending");
    let sync: Vec<u64> = store
        .feed(b, 0, 10, Feed::Sync)
        .expect("sync")
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(sync, ids, "sync: to and from b, withdrawn included");
    assert_eq!(
        store.feed(b, 0, 2, Feed::Sync).expect("sync").len(),
        2,
        "limit"
    );

    assert_eq!(store.delivered_upto(b).expect("cursor"), 0);
    store.advance_delivered(&[(b, ids[2])]).expect("advance");
    store
        .advance_delivered(&[(b, ids[0]), (a, ids[1])])
        .expect("never back");
    assert_eq!(store.delivered_upto(b).expect("cursor"), ids[2]);
    assert_eq!(store.delivered_upto(a).expect("cursor"), ids[1]);
    assert_eq!(pending(ids[2]), vec![ids[3]]);
}

// ------------------------------------------------------- both backends

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        /// The suite on SQLite, one fresh database per test.
        mod sqlite_suite {
            $(
                #[test]
                fn $check() {
                    let (_dir, store) = super::sqlite_store();
                    super::$check(&store);
                }
            )*
        }
        /// The suite on MySQL/MariaDB, one shared store.
        mod mysql_suite {
            $(
                #[test]
                fn $check() {
                    super::$check(super::mysql_store());
                }
            )*
        }
    };
}

conformance!(
    create_and_lookup,
    missing_users_are_none,
    ids_are_distinct_and_increasing,
    duplicate_username_conflicts,
    racing_creates_one_wins,
    parallel_distinct_creates,
    unicode_roundtrip,
    over_long_values_are_rejected,
    revoke_and_expire,
    double_revoke_keeps_later_expiry,
    ping_answers,
    messages_are_stored_in_order_and_once_per_cid,
    friend_history_pages_newest_first,
    withdrawn_messages_lose_their_body,
    pending_feed_follows_the_cursor,
);

// ---------------------------------------------- backend-specific checks

#[test]
fn sqlite_reopen_keeps_data() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = sqlite_path(&dir);
    reopen_keeps_data(&|| Box::new(open_sqlite(&path, 2).expect("open SQLite")) as Box<dyn Store>);
}

#[test]
fn mysql_reopen_keeps_data() {
    let url = mysql_url();
    mysql_store();
    reopen_keeps_data(&|| Box::new(open_mysql(&url, 2).expect("open MySQL")) as Box<dyn Store>);
}

fn sqlite_pragma(path: &Path, pragma: &str) -> String {
    let conn = rusqlite::Connection::open(path).expect("open raw connection");
    conn.query_row(&format!("PRAGMA {pragma}"), [], |r| {
        r.get::<_, rusqlite::types::Value>(0)
    })
    .map(|v| format!("{v:?}"))
    .expect("pragma")
}

#[test]
fn sqlite_uses_wal_and_auto_pool() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = sqlite_path(&dir);
    let store = open_sqlite(&path, 0).expect("open with automatic pool size");
    store.ping().expect("ping");
    assert!(sqlite_pragma(&path, "journal_mode").contains("wal"));
}

#[test]
fn sqlite_refuses_newer_schema() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = sqlite_path(&dir);
    drop(open_sqlite(&path, 1).expect("first open"));
    let conn = rusqlite::Connection::open(&path).expect("open raw connection");
    conn.execute("UPDATE schema_version SET version = 999 WHERE id = 1", [])
        .expect("bump version");
    drop(conn);
    let r = open_sqlite(&path, 1);
    assert!(matches!(r, Err(StoreError::Other(_))), "{r:?}");
}

#[test]
fn sqlite_unopenable_path_is_an_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    // A database under a regular file cannot be created.
    let r = open_sqlite(&file.join("weim.db"), 1);
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn mysql_closed_port_is_unavailable() {
    let url = format!("mysql://root@127.0.0.1:{}/weim_test", closed_port());
    let started = Instant::now();
    let r = open_mysql(&url, 2);
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn mysql_bad_url_is_other() {
    for url in [
        "postgres://root@127.0.0.1/weim_test",
        "mysql://root@127.0.0.1:3306",
    ] {
        let r = open_mysql(url, 2);
        assert!(matches!(r, Err(StoreError::Other(_))), "{url}: {r:?}");
    }
}
