//! Conformance of the store's `Profiles` (nickname, avatar, real name,
//! locations, bounding boxes) on SQLite and MariaDB. MariaDB:
//! `TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/weim_test`), a
//! shared database: unique usernames and places far from other tests'
//! (each check draws its own spot), nothing truncated.
//!
//! Run: `cargo test --release --test store_profile`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use weim::geo::{bounding_box, Point};
use weim::store::{open_mysql, open_sqlite, Area, MysqlStore, RealName, Store, StoreError};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}{:x}{:x}{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A spot of the earth no other check (of any run) uses: random latitude
/// band and longitude, away from the poles and the antimeridian.
fn spot() -> Point {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = nanos ^ (u64::from(std::process::id()) << 20) ^ N2.fetch_add(7919, Ordering::Relaxed);
    Point::new(
        -170.0 + (n % 34_000) as f64 / 100.0,
        -60.0 + ((n / 34_000) % 12_000) as f64 / 100.0,
    )
    .unwrap()
}
static N2: AtomicU64 = AtomicU64::new(0);

fn new_user(store: &dyn Store) -> u64 {
    store.create_user(&unique("p"), "hash", now()).unwrap().id
}

fn realname(hash: &str) -> RealName {
    RealName {
        name_mask: "张*".into(),
        id_mask: "110***********002X".into(),
        id_hash: hash.into(),
    }
}

// ------------------------------------------------------------------ checks

fn nickname_and_avatar(store: &dyn Store) {
    let id = new_user(store);
    assert!(store.set_nickname(id, "小明同学").unwrap());
    assert!(
        store.set_nickname(id, "小明同学").unwrap(),
        "same value again"
    );
    assert!(store.set_avatar(id, "/files/img/a.png").unwrap());
    let u = store.user_by_id(id).unwrap().unwrap();
    assert_eq!(
        (u.nickname.as_str(), u.avatar.as_str()),
        ("小明同学", "/files/img/a.png")
    );
    assert!(!store.set_nickname(u64::MAX / 2, "nobody").unwrap());
    assert!(!store.set_avatar(u64::MAX / 2, "x").unwrap());
    let long = "x".repeat(weim::store::MAX_NICKNAME_CHARS + 1);
    assert!(matches!(
        store.set_nickname(id, &long),
        Err(StoreError::Other(_))
    ));
}

fn realname_is_unique_per_number(store: &dyn Store) {
    let (a, b) = (new_user(store), new_user(store));
    let hash = unique("h");
    assert_eq!(store.realname(a).unwrap(), None);
    assert!(store.set_realname(a, &realname(&hash)).unwrap());
    assert!(
        store.set_realname(a, &realname(&hash)).unwrap(),
        "again, same account"
    );
    assert!(matches!(
        store.set_realname(b, &realname(&hash)),
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.realname(a).unwrap(), Some(realname(&hash)));
    assert!(store.user_by_id(a).unwrap().unwrap().realname_verified);
    assert!(!store.user_by_id(b).unwrap().unwrap().realname_verified);
    assert_eq!(store.realname(b).unwrap(), None);
    // A different number for b is fine.
    assert!(store.set_realname(b, &realname(&unique("h"))).unwrap());
}

fn racing_verifications_one_wins(store: &dyn Store) {
    let users: Vec<u64> = (0..6).map(|_| new_user(store)).collect();
    let hash = unique("r");
    let wins = std::thread::scope(|s| {
        let handles: Vec<_> = users
            .iter()
            .map(|&u| {
                let hash = hash.clone();
                s.spawn(move || store.set_realname(u, &realname(&hash)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|r| matches!(r, Ok(true)))
            .count()
    });
    assert_eq!(wins, 1);
}

fn locations_in_a_box(store: &dyn Store) {
    let c = spot();
    let t = now();
    let near = new_user(store);
    let far = new_user(store);
    let stale = new_user(store);
    let me = new_user(store);
    let at = |dlat: f64| Point::new(c.lon, c.lat + dlat).unwrap();
    assert!(store.set_location(near, at(0.01), t).unwrap());
    assert!(store.set_location(far, at(0.5), t).unwrap());
    assert!(store.set_location(stale, at(0.001), t - 1000).unwrap());
    assert!(store.set_location(me, c, t).unwrap());
    assert!(!store.set_location(u64::MAX / 2, c, t).unwrap());
    let (lat, lon) = bounding_box(c, 10_000.0);
    let area = Area {
        center: c,
        lat,
        lon,
        since: t - 10,
        exclude: me,
    };
    let found = store.located_in(&area, 100).unwrap();
    let ids: Vec<u64> = found.iter().map(|l| l.user.id).collect();
    assert_eq!(ids, vec![near]);
    assert_eq!(found[0].at, t);
    assert!((found[0].point.lat - (c.lat + 0.01)).abs() < 1e-9);
    // Wider: nearest first, the stale one in once freshness allows it.
    let (lat, lon) = bounding_box(c, 100_000.0);
    let area = Area {
        center: c,
        lat,
        lon,
        since: t - 5000,
        exclude: me,
    };
    let ids: Vec<u64> = store
        .located_in(&area, 100)
        .unwrap()
        .iter()
        .map(|l| l.user.id)
        .collect();
    assert_eq!(ids, vec![stale, near, far]);
    let ids: Vec<u64> = store
        .located_in(&area, 2)
        .unwrap()
        .iter()
        .map(|l| l.user.id)
        .collect();
    assert_eq!(ids, vec![stale, near]);
}

fn boxes_across_the_antimeridian(store: &dyn Store) {
    let lat = -70.0 + (now() % 1000) as f64 / 1000.0 + (std::process::id() % 97) as f64 / 10.0;
    let t = now();
    let (east, west) = (new_user(store), new_user(store));
    store
        .set_location(east, Point::new(179.99, lat).unwrap(), t)
        .unwrap();
    store
        .set_location(west, Point::new(-179.98, lat).unwrap(), t)
        .unwrap();
    let c = Point::new(179.995, lat).unwrap();
    let (la, lo) = bounding_box(c, 5_000.0);
    assert!(lo.0 > lo.1);
    let area = Area {
        center: c,
        lat: la,
        lon: lo,
        since: t - 10,
        exclude: 0,
    };
    let ids: Vec<u64> = store
        .located_in(&area, 100)
        .unwrap()
        .iter()
        .map(|l| l.user.id)
        .collect();
    assert!(ids.contains(&east) && ids.contains(&west), "{ids:?}");
    assert_eq!(ids.iter().position(|&i| i == east), Some(0), "{ids:?}");
}

fn users_by_ids(store: &dyn Store) {
    let (a, b) = (new_user(store), new_user(store));
    let got: Vec<u64> = store
        .users_by_ids(&[b, u64::MAX / 2, a])
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(got, vec![a, b]);
    assert!(store.users_by_ids(&[]).unwrap().is_empty());
}

// ----------------------------------------------------------- both backends

fn mysql_store() -> &'static MysqlStore {
    static STORE: OnceLock<MysqlStore> = OnceLock::new();
    STORE.get_or_init(|| {
        use mysql::prelude::Queryable;
        let url = std::env::var("TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/weim_test".into());
        let opts = mysql::Opts::from_url(&url).unwrap();
        let db = opts.get_db_name().unwrap().to_string();
        let mut conn =
            mysql::Conn::new(mysql::OptsBuilder::from_opts(opts).db_name(None::<String>))
                .unwrap_or_else(|e| panic!("cannot reach MariaDB at {url}: {e}"));
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4"
        ))
        .unwrap();
        open_mysql(&url, 8).unwrap()
    })
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite_suite {
            $(
                #[test]
                fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::open_sqlite(&dir.path().join("p.db"), 8).unwrap();
                    super::$check(&store);
                }
            )*
        }
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
    nickname_and_avatar,
    realname_is_unique_per_number,
    racing_verifications_one_wins,
    locations_in_a_box,
    boxes_across_the_antimeridian,
    users_by_ids,
);
