//! The browser files: static serving (types, `ETag` → 304, `Cache-Control`,
//! `Content-Security-Policy`, `http.web: false`) over the test HTTP client,
//! then the SDK, the web app and the operator's page in a real headless
//! Chromium driven over the DevTools protocol (tests/browser/*.mjs, run
//! with Node.js and puppeteer-core; scripts/test.sh installs both).
//!
//! `WEIM_BROWSER_MODULES` names the directory holding `node_modules`
//! with puppeteer-core (default `~/.cache/weim-test/browser`), `CHROMIUM`
//! the browser (default `/usr/bin/chromium`). Screenshots are written to
//! `target/browser-shots/<test>/`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long one browser script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------------------
// Static files
// ---------------------------------------------------------------------------

fn html_get(path: &str) -> Request {
    Request::get(path).header("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
}

#[test]
fn root_serves_the_app_to_browsers_and_the_welcome_to_others() {
    let node = Node::start();
    let page = node.request(&html_get("/"));
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .text()
        .contains("<script type=\"module\" src=\"/web/app.js\">"));
    for plain in [
        Request::get("/"),
        Request::get("/").header("Accept", "application/json"),
    ] {
        let resp = node.request(&plain);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["msg"], "欢迎使用");
    }
}

#[test]
fn files_have_types_tags_cache_control_and_a_strict_policy() {
    let node = Node::start();
    let files = [
        ("/sdk/weim.js", "text/javascript; charset=utf-8"),
        ("/web/app.js", "text/javascript; charset=utf-8"),
        ("/web/app.css", "text/css; charset=utf-8"),
        ("/admin", "text/html; charset=utf-8"),
        ("/web/admin.js", "text/javascript; charset=utf-8"),
        ("/web/icon.svg", "image/svg+xml"),
    ];
    for (path, content_type) in files {
        let resp = node.get(path);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("content-type"), Some(content_type), "{path}");
        assert_eq!(resp.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
        let csp = resp.header("content-security-policy").expect("a policy");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        let etag = resp.header("etag").expect("an ETag").to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

        let again = node.request(&Request::get(path).header("If-None-Match", &etag));
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        let stale = node.request(&Request::get(path).header("If-None-Match", "\"0\""));
        assert_eq!(stale.status, 200, "{path}");
        assert_eq!(stale.body, resp.body);
    }
    // No inline script in the pages: every script is a file of this origin.
    for page in ["/", "/admin"] {
        let html = node.request(&html_get(page)).text();
        for tag in html.split("<script").skip(1) {
            assert!(tag.contains(" src=\"/"), "{page}: inline script {tag:.60}");
        }
        assert!(!html.contains("style=\""), "{page}: inline style");
    }
    assert_eq!(node.get("/web/nothing.js").status, 404);
}

#[test]
fn http_web_false_turns_the_files_off() {
    let node = Node::builder().env("WEIM_HTTP_WEB", "false").start();
    assert_eq!(node.request(&html_get("/")).json()["msg"], "欢迎使用");
    for path in ["/sdk/weim.js", "/admin", "/web/app.js"] {
        assert_eq!(node.get(path).status, 404, "{path}");
    }
}

#[test]
fn the_policy_allows_pictures_from_the_public_url() {
    let node = Node::builder()
        .env("WEIM_HTTP_PUBLIC_URL", "https://im.example.com")
        .start();
    let csp = node.get("/sdk/weim.js");
    let csp = csp.header("content-security-policy").unwrap();
    assert!(
        csp.contains("img-src 'self' data: blob: https://im.example.com;"),
        "{csp}"
    );
}

// ---------------------------------------------------------------------------
// In the browser
// ---------------------------------------------------------------------------

/// A loopback port free right now (for a node restarted on the same port).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn shots_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/browser-shots")
        .join(test);
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// Runs `tests/browser/<script>.mjs <base> <outdir>`, handing every stdout
/// line to `on_line`, and returns the JSON of its `RESULT` line. Panics when
/// it fails, times out or prints no result.
fn run_script(
    script: &str,
    base: &str,
    test: &str,
    extra: &[&str],
    mut on_line: impl FnMut(&str),
) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modules = std::env::var_os("WEIM_BROWSER_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/weim-test/browser")
        });
    assert!(
        modules.join("node_modules/puppeteer-core").is_dir(),
        "puppeteer-core is not installed under {} (scripts/test.sh installs it)",
        modules.display()
    );
    let mut child = Command::new("node")
        .arg(root.join("tests/browser").join(format!("{script}.mjs")))
        .arg(base)
        .arg(shots_dir(test))
        .args(extra)
        .env("WEIM_BROWSER_MODULES", &modules)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node (Node.js)");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let mut result = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{script}.mjs did not finish within {SCRIPT_TIMEOUT:?}");
        }
        match rx.recv_timeout(left) {
            Ok(line) => match line.strip_prefix("RESULT ") {
                Some(json) => {
                    result = Some(serde_json::from_str::<Value>(json).expect("RESULT is JSON"))
                }
                None => on_line(&line),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().expect("wait for node");
    assert!(status.success(), "{script}.mjs failed ({status})");
    let result = result.unwrap_or_else(|| panic!("{script}.mjs printed no RESULT line"));
    assert_eq!(
        result["errors"],
        serde_json::json!([]),
        "errors in the page"
    );
    result
}

#[test]
fn sdk_exchanges_200_messages_exactly_once_across_a_node_restart() {
    let port = free_port();
    let data = tempfile::tempdir().expect("temporary directory");
    let listen = format!("127.0.0.1:{port}");
    let start = || {
        Node::builder()
            .env("WEIM_HTTP_LISTEN", &listen)
            .data_dir(data.path())
            .start()
    };
    let mut node = Some(start());
    let base = format!("http://127.0.0.1:{port}");
    let mut restarts = 0;
    let result = run_script("sdk", &base, "sdk", &[], |line| {
        if line == "CUT" {
            node.take().expect("a running node").kill();
            node = Some(start());
            restarts += 1;
        }
    });
    assert_eq!(restarts, 1, "the script never asked for the cut");
    for (i, c) in result["clients"]
        .as_array()
        .expect("two clients")
        .iter()
        .enumerate()
    {
        assert_eq!(c["sent"], 100, "client {i}: {c}");
        assert_eq!(c["distinct_ids_sent"], 100, "client {i}: {c}");
        assert_eq!(c["received"], 100, "client {i}: {c}");
        assert_eq!(c["missing"], 0, "client {i}: {c}");
        assert_eq!(c["duplicated"], 0, "client {i}: {c}");
        assert_eq!(
            c["reconnected"], true,
            "client {i} never lost its socket: {c}"
        );
    }
}

#[test]
fn web_app_chat_picture_history_and_a_group_of_three() {
    let node = Node::start();
    let base = format!("http://{}", node.addr);
    let result = run_script("web", &base, "web", &[], |_| {});
    assert_eq!(
        result["steps"],
        serde_json::json!([
            "registered",
            "friends",
            "chat",
            "picture",
            "withdraw",
            "history",
            "group",
            "paging",
            "phone"
        ]),
        "{result}"
    );
}

#[test]
fn admin_page_shows_the_node_and_its_connections_moving() {
    let node = Node::start();
    let base = format!("http://{}", node.addr);
    let result = run_script("admin", &base, "admin", &[ADMIN_TOKEN], |_| {});
    assert_eq!(
        result["steps"],
        serde_json::json!(["refused", "shown", "rose", "fell"]),
        "{result}"
    );
}

#[test]
fn admin_page_shows_every_node_of_a_cluster() {
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run scripts/test.sh (it starts etcd, Redis and MariaDB)")
        })
    };
    let (etcd, redis) = (env("TEST_ETCD_ENDPOINTS"), env("TEST_REDIS_URL"));
    let start = |id: &str| {
        Node::builder()
            .store(Store::Mysql)
            .cluster_mode()
            .env("WEIM_CLUSTER_ETCD", &etcd)
            .env("WEIM_CLUSTER_REDIS", &redis)
            .env("WEIM_CLUSTER_NODE_ID", id)
            .start()
    };
    let ids = [unique_name("adm"), unique_name("adm")];
    let mut nodes = [start(&ids[0]), start(&ids[1])];
    let sees_both = |node: &Node| {
        let reply = node.admin(Request::get("/cluster")).api();
        let servers = reply["data"]["servers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ids.iter()
            .all(|id| servers.iter().any(|s| s["id"] == id.as_str()))
    };
    assert!(
        wait_until(Duration::from_secs(20), || nodes.iter().all(sees_both)),
        "the nodes never saw each other"
    );
    let origins: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
    let mut args = vec![ADMIN_TOKEN];
    args.extend(origins.iter().map(String::as_str));
    let result = run_script("admin-cluster", &origins[0], "admin-cluster", &args, |_| {});
    assert_eq!(
        result["steps"],
        serde_json::json!(["every node"]),
        "{result}"
    );
    // Leave no registration behind in the shared etcd.
    for n in &nodes {
        n.sigterm();
    }
    for n in &mut nodes {
        n.wait_exit(Duration::from_secs(12));
    }
}
