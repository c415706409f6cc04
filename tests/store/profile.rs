//! `Profiles`: nickname, avatar, real name, locations and bounding boxes.

use weim::geo::{bounding_box, Point};
use weim::store::{Area, RealName, Store, StoreError};

use crate::common::{fresh_u64, now_secs, unique_name};

/// A spot of the earth no other check (of any run) uses: random latitude
/// band and longitude, away from the poles and the antimeridian.
fn spot() -> Point {
    let n = fresh_u64();
    Point::new(
        -170.0 + (n % 34_000) as f64 / 100.0,
        -60.0 + ((n / 34_000) % 12_000) as f64 / 100.0,
    )
    .unwrap()
}

fn new_user(store: &dyn Store) -> u64 {
    store
        .create_user(&unique_name("p"), "hash", now_secs())
        .unwrap()
        .id
}

fn realname(hash: &str) -> RealName {
    RealName {
        name_mask: "张*".into(),
        id_mask: "110***********002X".into(),
        id_hash: hash.into(),
    }
}

// ------------------------------------------------------------------ checks

pub fn nickname_and_avatar(store: &dyn Store) {
    let id = new_user(store);
    assert_eq!(store.set_nickname(id, "小明同学").unwrap(), Some(1));
    assert_eq!(
        store.set_nickname(id, "小明同学").unwrap(),
        Some(0),
        "same value again: nothing changed"
    );
    assert_eq!(store.set_avatar(id, "/files/img/a.png").unwrap(), Some(1));
    assert_eq!(store.set_avatar(id, "/files/img/a.png").unwrap(), Some(0));
    let u = store.user_by_id(id).unwrap().unwrap();
    assert_eq!(
        (u.nickname.as_str(), u.avatar.as_str()),
        ("小明同学", "/files/img/a.png")
    );
    assert_eq!(store.set_nickname(u64::MAX / 2, "nobody").unwrap(), None);
    assert_eq!(store.set_avatar(u64::MAX / 2, "x").unwrap(), None);
    let long = "x".repeat(weim::store::MAX_NICKNAME_CHARS + 1);
    assert!(matches!(
        store.set_nickname(id, &long),
        Err(StoreError::Other(_))
    ));
}

pub fn realname_is_unique_per_number(store: &dyn Store) {
    let (a, b) = (new_user(store), new_user(store));
    let hash = unique_name("h");
    assert_eq!(store.realname(a).unwrap(), None);
    assert_eq!(store.set_realname(a, &realname(&hash)).unwrap(), Some(1));
    assert_eq!(
        store.set_realname(a, &realname(&hash)).unwrap(),
        Some(0),
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
    assert_eq!(
        store.set_realname(b, &realname(&unique_name("h"))).unwrap(),
        Some(1)
    );
}

pub fn racing_verifications_one_wins(store: &dyn Store) {
    let users: Vec<u64> = (0..6).map(|_| new_user(store)).collect();
    let hash = unique_name("r");
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
            .filter(|r| matches!(r, Ok(Some(1))))
            .count()
    });
    assert_eq!(wins, 1);
}

pub fn locations_in_a_box(store: &dyn Store) {
    let c = spot();
    let t = now_secs();
    let near = new_user(store);
    let far = new_user(store);
    let stale = new_user(store);
    let me = new_user(store);
    let at = |dlat: f64| Point::new(c.lon, c.lat + dlat).unwrap();
    assert_eq!(store.set_location(near, at(0.01), t).unwrap(), Some(1));
    assert_eq!(store.set_location(far, at(0.5), t).unwrap(), Some(1));
    assert_eq!(
        store.set_location(stale, at(0.001), t - 1000).unwrap(),
        Some(1)
    );
    assert_eq!(store.set_location(me, c, t).unwrap(), Some(1));
    assert_eq!(store.set_location(me, c, t).unwrap(), Some(0), "same again");
    assert_eq!(store.set_location(u64::MAX / 2, c, t).unwrap(), None);
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

pub fn boxes_across_the_antimeridian(store: &dyn Store) {
    let lat = -70.0 + (now_secs() % 1000) as f64 / 1000.0 + (std::process::id() % 97) as f64 / 10.0;
    let t = now_secs();
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

pub fn users_by_ids(store: &dyn Store) {
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
