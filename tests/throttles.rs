//! Throttles and the rules against look-alike accounts: login guessing is
//! slowed per account and address (case variants are one account) without
//! keeping the owner out, registration floods and wrong `Admin-Token`s are
//! slowed per address, `http.trusted_proxies` lets `X-Forwarded-For` name
//! the client, a short `http.admin_token` stops the start, usernames are
//! ASCII letters, digits and `_ - .` only, and search words with control
//! characters are refused.
//!
//! Clients bind to distinct loopback sources (127.0.0.2, 127.0.0.3, …) so
//! the node sees distinct addresses.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WRONG: &str = "Wrong12345";

fn login_from(node: &Node, source: &str, username: &str, password: &str) -> Response {
    let req =
        Request::post("/api/v1/login").form(&[("username", username), ("password", password)]);
    node.request_from(source, &req)
}

fn register_from(node: &Node, source: &str, username: &str) -> Response {
    let req =
        Request::post("/api/v1/register").form(&[("username", username), ("password", PASSWORD)]);
    node.request_from(source, &req)
}

#[track_caller]
fn assert_msg(reply: &Value, msg: &str) {
    assert_eq!(reply["msg"], msg, "{reply}");
}

/// A refusal by a throttle: its text, and a `Retry-After` in seconds.
#[track_caller]
fn assert_throttled(resp: &Response, status: u16, msg: &str) -> u64 {
    assert_eq!(resp.status, status, "{:?}", resp.text());
    let reply = resp.envelope();
    assert_eq!(reply["code"], CODE_FAIL, "{reply}");
    assert_msg(&reply, msg);
    let after = resp.header("Retry-After").expect("Retry-After");
    after.parse().expect("Retry-After in seconds")
}

fn throttled(node: &Node, kind: &str) -> f64 {
    node.metrics()
        .value(&format!("weim_throttled_total{{kind=\"{kind}\"}}"))
}

// ---------------------------------------------------------------------------
// Logins
// ---------------------------------------------------------------------------

#[test]
fn guessing_an_account_and_its_case_variants_is_refused_while_its_owner_gets_in() {
    // A wait longer than the test: every refusal below is certain.
    let node = Node::builder().env("WEIM_AUTH_FAIL_DELAY", "10m").start();
    node.register("victim01");
    let guesser = "127.0.0.2";
    let variants = ["victim01", "VICTIM01", "Victim01", "vICTIM01", "ViCtIm01"];
    let mut answers = Vec::new();
    for (i, name) in variants.iter().enumerate() {
        for _ in 0..5 {
            answers.push(login_from(&node, guesser, name, WRONG));
        }
        if i == 2 {
            // In the middle of the run the owner logs in from elsewhere.
            let reply = login_from(&node, "127.0.0.3", "victim01", PASSWORD).api();
            expect_ok(&reply, MSG_LOGGED_IN);
        }
    }
    // Five guesses are checked; the other twenty, whatever their case,
    // are refused without looking at the password.
    for resp in &answers[..5] {
        assert_msg(&resp.api(), MSG_WRONG_PASSWORD);
    }
    for resp in &answers[5..] {
        let after = assert_throttled(resp, 200, MSG_TOO_MANY_FAILURES);
        assert!((1..=600).contains(&after), "Retry-After {after}");
    }
    // The right password from the guesser's address is refused too…
    assert_throttled(
        &login_from(&node, guesser, "victim01", PASSWORD),
        200,
        MSG_TOO_MANY_FAILURES,
    );
    // …while the owner still gets in, from the same address as before and
    // from a new one.
    for source in ["127.0.0.3", "127.0.0.4"] {
        let reply = login_from(&node, source, "VICTIM01", PASSWORD).api();
        expect_ok(&reply, MSG_LOGGED_IN);
    }
    // The guesser's other logins are not held up by this account.
    let bystander = node.new_account();
    let reply = login_from(&node, guesser, &bystander.username, PASSWORD).api();
    expect_ok(&reply, MSG_LOGGED_IN);

    // A guesser spread over many addresses gets one guess per address.
    for n in 10..15 {
        let source = format!("127.0.0.{n}");
        assert_msg(
            &login_from(&node, &source, "victim01", WRONG).api(),
            MSG_WRONG_PASSWORD,
        );
        assert_throttled(
            &login_from(&node, &source, "Victim01", WRONG),
            200,
            MSG_TOO_MANY_FAILURES,
        );
    }
    assert_eq!(throttled(&node, "login_account"), 26.0);
    assert_eq!(throttled(&node, "login_ip"), 0.0);
}

#[test]
fn parallel_guesses_get_no_more_than_the_allowance() {
    let node = Node::builder().env("WEIM_AUTH_FAIL_DELAY", "10m").start();
    node.register("victim02");
    // Twenty guesses at once, more than the workers: each is checked and
    // counted in one step, so five are tried whatever their interleaving.
    let answers: Vec<String> = thread::scope(|s| {
        let guesses: Vec<_> = (0..20)
            .map(|i| {
                let node = &node;
                s.spawn(move || {
                    let name = if i % 2 == 0 { "victim02" } else { "VICTIM02" };
                    let reply = login_from(node, "127.0.0.2", name, WRONG).api();
                    reply["msg"].as_str().unwrap_or_default().to_string()
                })
            })
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let tried = answers.iter().filter(|m| *m == MSG_WRONG_PASSWORD).count();
    let refused = answers
        .iter()
        .filter(|m| *m == MSG_TOO_MANY_FAILURES)
        .count();
    assert_eq!((tried, refused), (5, 15), "{answers:?}");
    let reply = login_from(&node, "127.0.0.3", "victim02", PASSWORD).api();
    expect_ok(&reply, MSG_LOGGED_IN);
}

#[test]
fn an_address_failing_on_many_accounts_waits_longer_after_each_failure() {
    let node = Node::builder()
        .env("WEIM_AUTH_LOGIN_FAIL_LIMIT_IP", "3")
        .env("WEIM_AUTH_FAIL_DELAY", "2s")
        .start();
    let account = node.new_account();
    let guesser = "127.0.0.2";
    for i in 0..3 {
        let reply = login_from(&node, guesser, &format!("nobody{i:02}"), WRONG).api();
        assert_msg(&reply, MSG_NO_SUCH_USER);
    }
    // Past the limit the address waits, whatever the account…
    let after = assert_throttled(
        &login_from(&node, guesser, &account.username, PASSWORD),
        200,
        MSG_TOO_MANY_FAILURES,
    );
    assert!((1..=2).contains(&after), "Retry-After {after}");
    // …other addresses do not.
    let reply = login_from(&node, "127.0.0.3", &account.username, PASSWORD).api();
    expect_ok(&reply, MSG_LOGGED_IN);

    // Once the wait is over, one more try is checked, and the next wait is
    // twice as long: no lock-out, a slower and slower guesser.
    thread::sleep(Duration::from_millis(2500));
    let reply = login_from(&node, guesser, "nobody99", WRONG).api();
    assert_msg(&reply, MSG_NO_SUCH_USER);
    let after = assert_throttled(
        &login_from(&node, guesser, &account.username, PASSWORD),
        200,
        MSG_TOO_MANY_FAILURES,
    );
    assert!((3..=4).contains(&after), "Retry-After {after}");
    assert_eq!(throttled(&node, "login_ip"), 2.0);
}

// ---------------------------------------------------------------------------
// Registrations
// ---------------------------------------------------------------------------

#[test]
fn a_registration_flood_is_refused_past_the_limit_while_other_addresses_register() {
    let node = Node::builder()
        .env("WEIM_AUTH_REGISTER_LIMIT_IP", "5")
        .env("WEIM_AUTH_REGISTER_WINDOW", "1h")
        .start();
    let flood = "127.0.0.2";
    for i in 0..5 {
        let reply = register_from(&node, flood, &format!("flood{i:03}")).api();
        expect_ok(&reply, MSG_LOGGED_IN);
    }
    for i in 5..10 {
        let after = assert_throttled(
            &register_from(&node, flood, &format!("flood{i:03}")),
            200,
            MSG_REGISTER_TOO_OFTEN,
        );
        assert!((3000..=3600).contains(&after), "Retry-After {after}");
        // Not created: the name is free for someone else.
        assert_msg(
            &login_from(&node, "127.0.0.4", &format!("flood{i:03}"), PASSWORD).api(),
            MSG_NO_SUCH_USER,
        );
    }
    // A refused name is still told why first.
    assert_msg(
        &register_from(&node, flood, "abc").api(),
        MSG_USERNAME_LENGTH,
    );
    // Another address registers as usual, during the flood.
    for i in 0..5 {
        let reply = register_from(&node, "127.0.0.3", &format!("other{i:03}")).api();
        expect_ok(&reply, MSG_LOGGED_IN);
    }
    assert_eq!(throttled(&node, "register"), 5.0);
}

// ---------------------------------------------------------------------------
// Admin-Token
// ---------------------------------------------------------------------------

#[test]
fn wrong_admin_tokens_slow_down_their_address() {
    let node = Node::builder()
        .env("WEIM_HTTP_ADMIN_FAIL_LIMIT", "3")
        .env("WEIM_AUTH_FAIL_DELAY", "10m")
        .start();
    let status = |source: &str, token: Option<&str>| {
        let req = Request::get("/ws/status");
        let req = match token {
            Some(t) => req.header("Admin-Token", t),
            None => req,
        };
        node.request_from(source, &req)
    };
    let guesser = "127.0.0.2";
    for i in 0..3 {
        let resp = status(guesser, Some(&format!("guess-{i:02}-0123456789")));
        assert_eq!(resp.status, 401, "{:?}", resp.text());
    }
    // Past the limit nothing from that address is compared, not even the
    // right token.
    for token in [Some("guess-99-0123456789"), Some(ADMIN_TOKEN), None] {
        let after = assert_throttled(&status(guesser, token), 429, MSG_ADMIN_TOO_MANY_FAILURES);
        assert!((1..=600).contains(&after), "Retry-After {after}");
    }
    // Another address is served.
    let resp = status("127.0.0.3", Some(ADMIN_TOKEN));
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    // A missing or empty token is no guess.
    for token in [None, Some(""), None, Some(""), None] {
        assert_eq!(status("127.0.0.4", token).status, 401);
    }
    assert_eq!(status("127.0.0.4", Some(ADMIN_TOKEN)).status, 200);
    assert_eq!(throttled(&node, "admin"), 3.0);
}

#[test]
fn an_admin_token_shorter_than_16_characters_stops_the_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.yml");
    std::fs::write(&config, b"").unwrap();
    let mut cmd = Command::new(weim_binary());
    cmd.arg("--config").arg(&config);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEIM_") {
            cmd.env_remove(&key);
        }
    }
    let mut child = cmd
        .env("WEIM_HTTP_LISTEN", "127.0.0.1:0")
        .env("WEIM_NODE_DATA_DIR", dir.path())
        .env("WEIM_HTTP_ADMIN_TOKEN", "0123456789")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weim");
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let status = status.unwrap_or_else(|| panic!("weim kept running:\n{stderr}"));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("http.admin_token") && stderr.contains("16"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Trusted proxies
// ---------------------------------------------------------------------------

fn login_via(node: &Node, source: &str, forwarded_for: &str, username: &str) -> Response {
    let req = Request::post("/api/v1/login")
        .header("X-Forwarded-For", forwarded_for)
        .form(&[("username", username), ("password", WRONG)]);
    node.request_from(source, &req)
}

#[test]
fn behind_a_trusted_proxy_x_forwarded_for_names_the_throttled_address() {
    let node = Node::builder()
        .env("WEIM_HTTP_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
        .env("WEIM_AUTH_LOGIN_FAIL_LIMIT_IP", "3")
        .env("WEIM_AUTH_FAIL_DELAY", "10m")
        .start();
    let proxy = "127.0.0.1";
    for i in 0..3 {
        let reply = login_via(&node, proxy, "203.0.113.7", &format!("nobody{i:02}")).api();
        assert_msg(&reply, MSG_NO_SUCH_USER);
    }
    // The client behind the proxy waits, even when it claims another
    // address to the left or comes through a second trusted hop…
    for xff in [
        "203.0.113.7",
        "198.51.100.1, 203.0.113.7",
        "203.0.113.7, 10.1.2.3",
    ] {
        assert_throttled(
            &login_via(&node, proxy, xff, "nobody99"),
            200,
            MSG_TOO_MANY_FAILURES,
        );
    }
    // …other clients of the same proxy do not.
    let reply = login_via(&node, proxy, "203.0.113.8", "nobody99").api();
    assert_msg(&reply, MSG_NO_SUCH_USER);

    // An untrusted peer cannot pick its address with the header.
    let direct = "127.0.0.2";
    for i in 0..3 {
        let xff = format!("203.0.113.{}", 20 + i);
        let reply = login_via(&node, direct, &xff, "nobody99").api();
        assert_msg(&reply, MSG_NO_SUCH_USER);
    }
    assert_throttled(
        &login_via(&node, direct, "203.0.113.99", "nobody99"),
        200,
        MSG_TOO_MANY_FAILURES,
    );
}

#[test]
fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let node = Node::builder()
        .env("WEIM_AUTH_LOGIN_FAIL_LIMIT_IP", "3")
        .env("WEIM_AUTH_FAIL_DELAY", "10m")
        .start();
    for i in 0..3 {
        let xff = format!("203.0.113.{}", 20 + i);
        let reply = login_via(&node, "127.0.0.1", &xff, "nobody99").api();
        assert_msg(&reply, MSG_NO_SUCH_USER);
    }
    assert_throttled(
        &login_via(&node, "127.0.0.1", "203.0.113.99", "nobody99"),
        200,
        MSG_TOO_MANY_FAILURES,
    );
    // The throttled address is the peer's: another peer is served.
    let reply = login_via(&node, "127.0.0.2", "203.0.113.20", "nobody99").api();
    assert_msg(&reply, MSG_NO_SUCH_USER);
}

// ---------------------------------------------------------------------------
// Usernames and search words
// ---------------------------------------------------------------------------

#[test]
fn usernames_are_ascii_letters_digits_and_underscore_dash_dot() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder().data_dir(dir.path()).start();
    node.register("alice01");
    let look_alikes = [
        " alice01",
        "alice01 ",
        "ａｌｉｃｅ01",
        "alıce01",
        "alice\r01",
        "alice\n01",
        "alice\r\n01",
        "alice\u{0}01",
        "alice\t01",
        "\u{202e}alice01",
        "ali\u{200b}ce01",
        "alice\u{feff}01",
        "alice01@x",
        "alice 01",
    ];
    for name in look_alikes {
        let reply = node.register_raw(name, PASSWORD);
        assert_eq!(reply["code"], CODE_FAIL, "{name:?}: {reply}");
        assert_msg(&reply, MSG_USERNAME_CHARS);
    }
    // The old texts still come first where they apply.
    assert_msg(&node.register_raw("al ce", PASSWORD), MSG_USERNAME_LENGTH);
    assert_msg(&node.register_raw("张三abcdef", PASSWORD), MSG_NO_HAN);

    let reply = node.register_raw("Alice_01.x-y", PASSWORD);
    expect_ok(&reply, MSG_LOGGED_IN);
    assert_eq!(reply["data"]["user"]["username"], "Alice_01.x-y");
    assert_msg(
        &node.register_raw("ALICE_01.X-Y", PASSWORD),
        MSG_USER_EXISTS,
    );
    let reply = node.login_raw("alice_01.X-Y", PASSWORD);
    assert_eq!(
        expect_ok(&reply, MSG_LOGGED_IN)["user"]["username"],
        "Alice_01.x-y"
    );

    // An account made before these rules keeps working.
    let legacy = node.register("legacy01");
    let db = rusqlite::Connection::open(dir.path().join("weim.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE users SET username = ' Legacy01', username_key = ' legacy01' WHERE id = ?1",
        [legacy.id],
    )
    .unwrap();
    let reply = node.login_raw(" legacy01", PASSWORD);
    expect_ok(&reply, MSG_LOGGED_IN);
    assert_eq!(reply["data"]["user"]["id"], legacy.id);
}

#[test]
fn search_words_with_control_characters_are_refused() {
    let node = Node::start();
    let me = node.new_account();
    let _others: Vec<Account> = (0..3).map(|_| node.new_account()).collect();
    for route in ["/api/v1/im/friend/search", "/api/v1/im/group/search"] {
        for word in ["\u{0}", "a\u{0}", "a\r\nb", "u\u{7}", "\u{1b}[2J"] {
            let reply = node.api_as(&me.token, route, &[("word", word)]);
            assert_eq!(reply["code"], CODE_FAIL, "{route} {word:?}: {reply}");
            assert_msg(&reply, MSG_SEARCH_CONTROL);
        }
    }
    // A plain word still searches.
    let reply = node.api_as(&me.token, "/api/v1/im/friend/search", &[("word", "u")]);
    assert!(!expect_ok(&reply, "请求成功")["list"]
        .as_array()
        .unwrap()
        .is_empty());
}
