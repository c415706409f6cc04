//! Checks of one backend alone: reopening a database, SQLite's journal mode
//! and schema version, MySQL/MariaDB connection errors.

use std::path::Path;
use std::time::{Duration, Instant};

use weim::store::{open_mysql, open_sqlite, Accounts, Store, StoreError};

use crate::common::{mysql_url, now_secs, unique_name};
use crate::{mysql_store, sqlite_path};

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    port
}

/// Data written through one store is there when the database is opened
/// again (SQLite: the same file after closing; MySQL: a second pool).
fn reopen_keeps_data(open: &dyn Fn() -> Box<dyn Store>) {
    let now = now_secs();
    let name = unique_name("reopen");
    let sig = unique_name("reopen");
    let user = {
        let store = open();
        store.revoke_session(&sig, now + 3600).expect("revoke");
        store.create_user(&name, "h", now).expect("create")
    };
    let store = open();
    assert_eq!(
        store.user_by_id(user.id).expect("by id"),
        Some(user.clone())
    );
    assert_eq!(store.user_by_name(&name).expect("by name"), Some(user));
    let list = store.revoked_sessions(now).expect("list");
    assert!(list.contains(&(sig, now + 3600)));
    let again = store.create_user(&name, "h", now);
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
}

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
