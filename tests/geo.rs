//! Nearby people end to end (`geo/users`, PROTOCOL §1.2): ordering,
//! rounding, the caller left out, pagination, `geo.ttl`, validation; on the
//! SQL engine (SQLite and MariaDB) and on Redis GEO (`TEST_REDIS_URL`, a
//! unique key prefix per test).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// A place no other test (of any run) uses: a latitude band and a
/// longitude drawn from the clock and the process.
fn spot() -> (f64, f64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let r = (nanos / 1000)
        ^ (u64::from(std::process::id()) << 13)
        ^ (N.fetch_add(1, Ordering::Relaxed) << 33);
    (
        -170.0 + (r % 34_000) as f64 / 100.0,
        -70.0 + ((r / 34_000) % 14_000) as f64 / 100.0,
    )
}

fn locate(node: &Node, token: &str, lon: f64, lat: f64) {
    let reply = node.api_as(
        token,
        "/api/v1/user/update/location",
        &[
            ("longitude", &lon.to_string()),
            ("latitude", &lat.to_string()),
        ],
    );
    assert_eq!(reply["code"], CODE_OK, "{reply}");
}

fn nearby(node: &Node, token: &str, lon: f64, lat: f64, extra: &[(&str, &str)]) -> Value {
    let (lon, lat) = (lon.to_string(), lat.to_string());
    let mut params = vec![("longitude", lon.as_str()), ("latitude", lat.as_str())];
    params.extend_from_slice(extra);
    node.api_as(token, "/api/v1/geo/users", &params)
}

/// `(id, distance)` of a `geo/users` answer.
#[track_caller]
fn list(reply: &Value) -> Vec<(i64, String)> {
    assert_eq!(reply["code"], CODE_OK, "{reply}");
    assert_eq!(reply["msg"], "ok", "{reply}");
    reply["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            for key in ["username", "nickname", "avatar"] {
                assert!(u[key].is_string(), "{u}");
            }
            assert!(u["sex"].is_i64(), "{u}");
            (
                u["id"].as_i64().unwrap(),
                u["distance"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Metres north as degrees of latitude.
fn north(m: f64) -> f64 {
    m / 111_195.08
}

fn ordering_rounding_and_pages(node: &Node) {
    let (lon, lat) = spot();
    let me = node.new_account();
    let people: Vec<(Account, f64)> = [30.0, 640.0, 960.0, 1_234.0, 15_678.0, 150_000.0]
        .into_iter()
        .map(|m| (node.new_account(), m))
        .collect();
    for (who, m) in people.iter().rev() {
        locate(node, &who.token, lon, lat + north(*m));
    }
    locate(node, &me.token, lon, lat);
    let got = list(&nearby(node, &me.token, lon, lat, &[]));
    let want: Vec<(i64, String)> = people[..5]
        .iter()
        .zip(["100m", "600m", "1.00km", "1.20km", "15.70km"])
        .map(|((a, _), d)| (a.id, d.to_string()))
        .collect();
    assert_eq!(got, want);
    // Radius, pages.
    let got = list(&nearby(node, &me.token, lon, lat, &[("distance", "1")]));
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![people[0].0.id, people[1].0.id, people[2].0.id]
    );
    let page2 = list(&nearby(
        node,
        &me.token,
        lon,
        lat,
        &[("page", "2"), ("size", "2")],
    ));
    assert_eq!(page2, want[2..4].to_vec());
    assert!(list(&nearby(node, &me.token, lon, lat, &[("page", "9")])).is_empty());
    // Someone else sees me, not themselves.
    let other = &people[0].0;
    let got = list(&nearby(
        node,
        &other.token,
        lon,
        lat,
        &[("distance", "0.5")],
    ));
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![me.id]);
    // Validation.
    let ok = (lon.to_string(), lat.to_string());
    for (lo, la, extra) in [
        ("", ok.1.as_str(), vec![]),
        (ok.0.as_str(), "91", vec![]),
        ("181", ok.1.as_str(), vec![]),
        ("NaN", ok.1.as_str(), vec![]),
        (ok.0.as_str(), ok.1.as_str(), vec![("distance", "0")]),
        (ok.0.as_str(), ok.1.as_str(), vec![("distance", "100.1")]),
        (ok.0.as_str(), ok.1.as_str(), vec![("distance", "-3")]),
        (ok.0.as_str(), ok.1.as_str(), vec![("distance", "far")]),
        (ok.0.as_str(), ok.1.as_str(), vec![("page", "0")]),
        (ok.0.as_str(), ok.1.as_str(), vec![("size", "101")]),
    ] {
        let mut params = vec![("longitude", lo), ("latitude", la)];
        params.extend(extra);
        let reply = node.api_as(&me.token, "/api/v1/geo/users", &params);
        assert_eq!(
            (reply["code"].as_i64(), reply["msg"].as_str()),
            (Some(CODE_FAIL), Some("数据非法")),
            "{params:?}: {reply}"
        );
    }
    let reply = node.api(
        "/api/v1/geo/users",
        &[("longitude", "1"), ("latitude", "1")],
    );
    assert_eq!(reply["code"], CODE_AUTH);
}

fn old_locations_expire(node: &Node) {
    let (lon, lat) = spot();
    let (me, old, fresh) = (node.new_account(), node.new_account(), node.new_account());
    locate(node, &old.token, lon, lat + north(200.0));
    // Times are whole seconds: more than ttl + 1 s later it is past.
    std::thread::sleep(Duration::from_millis(3200));
    locate(node, &fresh.token, lon, lat + north(400.0));
    let got = list(&nearby(node, &me.token, lon, lat, &[]));
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![fresh.id]);
    // Moving again makes one visible again.
    locate(node, &old.token, lon, lat + north(250.0));
    let got = list(&nearby(node, &me.token, lon, lat, &[]));
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![old.id, fresh.id]
    );
}

fn redis_node(ttl: Option<&str>) -> Option<Node> {
    let Ok(url) = std::env::var("TEST_REDIS_URL") else {
        eprintln!("skipped: TEST_REDIS_URL is not set (scripts/test.sh sets it)");
        return None;
    };
    let mut b = Node::builder().env("WEIM_GEO_REDIS", &url).env(
        "WEIM_GEO_REDIS_PREFIX",
        &format!("weim-test:{}", unique_name("g")),
    );
    if let Some(ttl) = ttl {
        b = b.env("WEIM_GEO_TTL", ttl);
    }
    Some(b.start())
}

#[test]
fn sqlite_ordering_rounding_and_pages() {
    ordering_rounding_and_pages(&Node::start());
}

#[test]
fn mysql_ordering_rounding_and_pages() {
    ordering_rounding_and_pages(&Node::start_on(Store::Mysql));
}

#[test]
fn redis_ordering_rounding_and_pages() {
    if let Some(node) = redis_node(None) {
        ordering_rounding_and_pages(&node);
    }
}

#[test]
fn sqlite_old_locations_expire() {
    old_locations_expire(&Node::builder().env("WEIM_GEO_TTL", "2s").start());
}

#[test]
fn mysql_old_locations_expire() {
    old_locations_expire(
        &Node::builder()
            .store(Store::Mysql)
            .env("WEIM_GEO_TTL", "2s")
            .start(),
    );
}

#[test]
fn redis_old_locations_expire() {
    if let Some(node) = redis_node(Some("2s")) {
        old_locations_expire(&node);
    }
}
