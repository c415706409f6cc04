//! Harness for weim's integration tests.
//!
//! Every test starts its own `weim` process on an ephemeral loopback port
//! (`Node`), then speaks to it with a hand-written HTTP/1.1 client (`Http`),
//! a normal WebSocket client built on tungstenite (`Ws`), or a raw WebSocket
//! client that can write any frame, well-formed or not (`RawWs`).
//!
//! Every socket has read and write timeouts and every loop is bounded in
//! count and in time, so no test can hang.
//!
//! Run: `cargo test --release`. The MariaDB variants use `TEST_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/weim_test`; the database is created
//! if missing, tables are the node's business, nothing is truncated: every
//! test uses unique usernames). `TEST_WEIM_BIN` runs the suite against
//! another build of the gateway instead of this crate's `weim` binary.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tungstenite::protocol::Message;

pub mod hooks;

/// Read and write timeout of every socket the tests open.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node may take to print its `listening` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// `Admin-Token` configured on every test node (at least 16 characters).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123";
/// `auth.jwt_secret` configured on every test node.
pub const JWT_SECRET: &str = "test-secret";
/// A password that passes validation.
pub const PASSWORD: &str = "Secret123";
/// Default database of the MariaDB variant.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/weim_test";
/// A short wait for pushes that must not come.
pub const QUIET: Duration = Duration::from_millis(200);
/// The `Host` every `Request` names.
pub const TEST_HOST: &str = "weim.test";
/// What the gateway's own paths become in answers to a `Request` (no
/// `http.public_url`): `http://<Host>`.
pub const TEST_BASE_URL: &str = "http://weim.test";
/// The avatar answered for a user without one (default `user.default_avatar`).
pub const DEFAULT_AVATAR_URL: &str = "http://weim.test/public/avatar/default.png";

// Texts of PROTOCOL.md, matched byte for byte.
pub const MSG_LOGGED_IN: &str = "登录成功";
pub const MSG_ENTER_USERNAME: &str = "请输入用户名";
pub const MSG_USERNAME_LENGTH: &str = "用户名长度限制6-20位";
pub const MSG_ENTER_PASSWORD: &str = "请输入密码";
pub const MSG_PASSWORD_LENGTH: &str = "密码长度限制6-20位";
pub const MSG_NO_HAN: &str = "用户名和密码不能含有中文";
pub const MSG_USER_EXISTS: &str = "用户已存在，请更换用户名后重试";
pub const MSG_NO_SUCH_USER: &str = "用户不存在，请更换用户名后重试";
pub const MSG_WRONG_PASSWORD: &str = "密码错误";
pub const MSG_TOO_MANY_FAILURES: &str = "登录失败次数过多，请稍后再试";
pub const MSG_USERNAME_CHARS: &str = "用户名只能包含英文字母、数字、下划线(_)、连字符(-)和点(.)";
pub const MSG_REGISTER_TOO_OFTEN: &str = "注册过于频繁，请稍后再试";
pub const MSG_SEARCH_CONTROL: &str = "搜索关键词不能包含控制字符";
pub const MSG_ADMIN_TOO_MANY_FAILURES: &str = "鉴权失败次数过多，请稍后再试";
pub const WS_AUTH_OK: &str = "认证成功";
pub const WS_AUTH_FAILED: &str = "认证失败";
pub const WS_NOT_SIGNED_IN: &str = "你还未认证";
pub const WS_BAD_FORMAT: &str = "消息格式错误";
pub const BROADCAST_DEFAULT_BODY: &str = "测试消息收发";

// Envelope codes (PROTOCOL §1.1).
pub const CODE_OK: i64 = 0;
pub const CODE_FAIL: i64 = 1000;
pub const CODE_AUTH: i64 = 1001;
pub const CODE_NOT_FOUND: i64 = 1002;

// WebSocket opcodes and close codes (RFC 6455).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_BAD_DATA: u16 = 1007;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
/// weim: the oldest connection of a user over `limits.conns_per_user`.
pub const CLOSE_REPLACED: u16 = 4000;

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

/// Which store a node runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Mysql,
}

/// Configuration of a node before it starts.
pub struct NodeBuilder {
    store: Store,
    env: Vec<(String, String)>,
    data_dir: Option<std::path::PathBuf>,
    netns: Option<String>,
    nofile: Option<u64>,
}

impl NodeBuilder {
    /// Runs the node on `store`.
    pub fn store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    /// Sets (or overrides) one `WEIM_*` variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        assert!(key.starts_with("WEIM_"), "not a weim variable: {key}");
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Cluster mode (`cluster.enabled`) with local attachments in one
    /// directory every test node sees, declared shared (a cluster refuses
    /// unshared local attachments).
    pub fn cluster_mode(self) -> Self {
        let files = std::env::temp_dir().join("weim-test-cluster-files");
        self.env("WEIM_CLUSTER_ENABLED", "true")
            .env("WEIM_ATTACH_DIR", &files.to_string_lossy())
            .env("WEIM_ATTACH_SHARED", "true")
    }

    /// Keeps the node's data directory at `dir` (kept after the node
    /// ends, e.g. to restart it with the same state) instead of a
    /// temporary one.
    pub fn data_dir(mut self, dir: &std::path::Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Runs the node inside network namespace `name` (`ip netns exec`,
    /// which execs the node: the child's pid is the node's). Set
    /// `WEIM_HTTP_LISTEN` to an address of that namespace too.
    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_string());
        self
    }

    /// Runs the node with at most `n` open file descriptors
    /// (`RLIMIT_NOFILE`, soft and hard, set in the child before it execs).
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Starts a node that must not come up: waits (≤ `within`) for it to
    /// exit and returns its exit status and what it wrote to stderr.
    pub fn expect_exit(self, within: Duration) -> (ExitStatus, String) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut cmd = self.command(dir.path());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the weim binary");
        let log = Arc::new(Mutex::new(LogTail::default()));
        spawn_log_reader(child.stderr.take().expect("piped stderr"), Arc::clone(&log));
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("weim still running after {within:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        // Let the reader take the last bytes of stderr.
        thread::sleep(Duration::from_millis(100));
        let log = log.lock().unwrap();
        let text =
            String::from_utf8_lossy(&log.bytes.iter().copied().collect::<Vec<u8>>()).into_owned();
        (status, text)
    }

    /// The command that runs the node with this configuration (its empty
    /// config file and, unless set, its data directory in `dir`).
    fn command(&self, dir: &std::path::Path) -> Command {
        let config = dir.join("empty.yml");
        std::fs::write(&config, b"").expect("write empty.yml");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(weim_binary());
                cmd
            }
            None => Command::new(weim_binary()),
        };
        cmd.arg("--config").arg(&config);
        // The node must see our variables only: any unknown WEIM_* variable
        // of the surrounding environment would stop it (exit code 2).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WEIM_") {
                cmd.env_remove(&key);
            }
        }
        let data_dir = match &self.data_dir {
            Some(d) => d.to_string_lossy().into_owned(),
            None => dir.to_string_lossy().into_owned(),
        };
        let mut env: Vec<(String, String)> = vec![
            ("WEIM_HTTP_LISTEN".into(), "127.0.0.1:0".into()),
            ("WEIM_NODE_DATA_DIR".into(), data_dir),
            ("WEIM_HTTP_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ("WEIM_NODE_REACTORS".into(), "2".into()),
            ("WEIM_NODE_WORKERS".into(), "4".into()),
            ("WEIM_AUTH_JWT_SECRET".into(), JWT_SECRET.into()),
            // Tests register many users from 127.0.0.1; tests/throttles.rs
            // sets its own limit.
            ("WEIM_AUTH_REGISTER_LIMIT_IP".into(), "0".into()),
        ];
        if self.store == Store::Mysql {
            env.push(("WEIM_STORE_KIND".into(), "mysql".into()));
            env.push(("WEIM_STORE_MYSQL_URL".into(), mysql_url()));
        }
        env.extend(self.env.iter().cloned());
        for (key, value) in &env {
            cmd.env(key, value);
        }
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; the closure touches
            // nothing but its copy of `n` between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Starts the node and waits for its `listening` line.
    pub fn start(self) -> Node {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut cmd = self.command(dir.path());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let mut child = cmd.spawn().expect("spawn the weim binary");
        let log = Arc::new(Mutex::new(LogTail::default()));
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_log_reader(stderr, Arc::clone(&log));

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            // Forwards every stdout line, then keeps draining stdout so
            // the node never blocks on it.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Once the node is up nobody listens: the line is dropped.
                let _ = tx.send(line);
            }
        });

        let mut node = Node {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            store: self.store,
            log,
            log_shown: false,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                node.fail("did not print `weim: listening on ...` within 20 s");
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("weim: listening on ") {
                        node.addr = rest
                            .trim()
                            .parse()
                            .unwrap_or_else(|e| node.fail(&format!("bad address {rest:?}: {e}")));
                        return node;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the node is going down; let the exit
                    // status (below) tell why.
                    thread::sleep(Duration::from_millis(100));
                }
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                node.fail(&format!("exited before listening ({status})"));
            }
        }
    }
}

/// The gateway under test: the crate's `weim` binary, or the program named
/// by `TEST_WEIM_BIN` (to run the suite against another build).
pub fn weim_binary() -> std::ffi::OsString {
    std::env::var_os("TEST_WEIM_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weim").into())
}

/// The last bytes a node wrote to stderr (its log).
#[derive(Default)]
struct LogTail {
    bytes: VecDeque<u8>,
}

const LOG_TAIL_BYTES: usize = 64 * 1024;

fn spawn_log_reader(mut stderr: ChildStderr, log: Arc<Mutex<LogTail>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut log = log.lock().unwrap();
                    log.bytes.extend(&buf[..n]);
                    let excess = log.bytes.len().saturating_sub(LOG_TAIL_BYTES);
                    log.bytes.drain(..excess);
                }
            }
        }
    });
}

/// A running `weim` process, killed when dropped.
pub struct Node {
    child: Child,
    /// Where the node listens (HTTP and WebSocket on one port).
    pub addr: SocketAddr,
    pub store: Store,
    log: Arc<Mutex<LogTail>>,
    log_shown: bool,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() && !self.log_shown {
            eprintln!("---- weim log (tail) ----\n{}\n----", self.log());
        }
    }
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            store: Store::Sqlite,
            env: Vec::new(),
            data_dir: None,
            netns: None,
            nofile: None,
        }
    }

    /// A node with the default test configuration on SQLite.
    pub fn start() -> Node {
        Node::builder().start()
    }

    /// A node with the default test configuration on `store`.
    pub fn start_on(store: Store) -> Node {
        Node::builder().store(store).start()
    }

    /// What the node wrote to stderr so far (the last 64 KiB).
    pub fn log(&self) -> String {
        let log = self.log.lock().unwrap();
        let (a, b) = log.bytes.as_slices();
        let mut all = a.to_vec();
        all.extend_from_slice(b);
        String::from_utf8_lossy(&all).into_owned()
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        thread::sleep(Duration::from_millis(100));
        self.log_shown = true;
        panic!("weim {why}\n---- stderr ----\n{}\n----", self.log());
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's resident set size (`VmRSS` of `/proc/<pid>/status`), bytes.
    #[track_caller]
    pub fn rss_bytes(&self) -> u64 {
        self.proc_status_bytes("VmRSS")
    }

    /// The node's peak resident set size since it started or since
    /// [`Node::reset_peak_rss`] (`VmHWM`), bytes.
    #[track_caller]
    pub fn peak_rss_bytes(&self) -> u64 {
        self.proc_status_bytes("VmHWM")
    }

    /// Resets the node's peak resident set size to its current one
    /// (`/proc/<pid>/clear_refs`), so that the next peak is measured from
    /// now on, however briefly it lasts.
    #[track_caller]
    pub fn reset_peak_rss(&self) {
        let path = format!("/proc/{}/clear_refs", self.pid());
        std::fs::write(&path, b"5").unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    #[track_caller]
    fn proc_status_bytes(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}:\n{status}"));
        kib * 1024
    }

    /// Kills this node with SIGKILL (no drain) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM to this node (and only to it).
    pub fn sigterm(&self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Waits at most `within` for the process to end.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    // ---- HTTP ----

    /// A new keep-alive HTTP connection.
    #[track_caller]
    pub fn http(&self) -> Http {
        Http::connect(self.addr)
    }

    /// One request on a new connection.
    #[track_caller]
    pub fn request(&self, req: &Request) -> Response {
        self.http().request(req)
    }

    /// A new keep-alive HTTP connection from `source` (a loopback
    /// address: the node sees it as the client's).
    #[track_caller]
    pub fn http_from(&self, source: &str) -> Http {
        Http::over(tcp_connect_from(self.addr, source))
    }

    /// One request on a new connection from `source`.
    #[track_caller]
    pub fn request_from(&self, source: &str, req: &Request) -> Response {
        self.http_from(source).request(req)
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.request(&Request::get(path))
    }

    /// POSTs form parameters to an API route and returns the envelope,
    /// asserting HTTP 200.
    #[track_caller]
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        self.request(&Request::post(path).form(params)).api()
    }

    /// Same as `api`, signed with `Login-Token`.
    #[track_caller]
    pub fn api_as(&self, token: &str, path: &str, params: &[(&str, &str)]) -> Value {
        self.request(&Request::post(path).login_token(token).form(params))
            .api()
    }

    #[track_caller]
    pub fn register_raw(&self, username: &str, password: &str) -> Value {
        self.api(
            "/api/v1/register",
            &[("username", username), ("password", password)],
        )
    }

    #[track_caller]
    pub fn login_raw(&self, username: &str, password: &str) -> Value {
        self.api(
            "/api/v1/login",
            &[("username", username), ("password", password)],
        )
    }

    /// Registers `username` and returns its account; the registration
    /// must succeed.
    #[track_caller]
    pub fn register(&self, username: &str) -> Account {
        let reply = self.register_raw(username, PASSWORD);
        Account::from_sign_in(username, &reply)
    }

    /// Registers a new user with a unique name.
    #[track_caller]
    pub fn new_account(&self) -> Account {
        self.register(&unique_name("u"))
    }

    /// Logs `username` in; the login must succeed.
    #[track_caller]
    pub fn login(&self, username: &str) -> Account {
        let reply = self.login_raw(username, PASSWORD);
        Account::from_sign_in(username, &reply)
    }

    /// `POST /api/v1/user/me` with `token`.
    #[track_caller]
    pub fn me(&self, token: &str) -> Value {
        self.api_as(token, "/api/v1/user/me", &[])
    }

    // ---- operations ----

    #[track_caller]
    pub fn admin(&self, req: Request) -> Response {
        self.request(&req.header("Admin-Token", ADMIN_TOKEN))
    }

    /// `GET /ws/status` → its `data`.
    #[track_caller]
    pub fn status(&self) -> Value {
        let reply = self.admin(Request::get("/ws/status")).api();
        assert_eq!(reply["code"], CODE_OK, "/ws/status: {reply}");
        reply["data"].clone()
    }

    /// `POST /ws/sendToAll` with an optional `body` → `data.local`.
    #[track_caller]
    pub fn send_to_all(&self, body: Option<&str>) -> i64 {
        let params: Vec<(&str, &str)> = body.map(|b| ("body", b)).into_iter().collect();
        let reply = self
            .admin(Request::post("/ws/sendToAll").form(&params))
            .api();
        assert_eq!(reply["code"], CODE_OK, "sendToAll: {reply}");
        match reply["data"]["local"].as_i64() {
            Some(local) => local,
            None => panic!("sendToAll without data.local: {reply}"),
        }
    }

    #[track_caller]
    pub fn metrics(&self) -> Metrics {
        let resp = self.get("/metrics");
        assert_eq!(resp.status, 200, "/metrics: {}", resp.text());
        Metrics(resp.text())
    }

    /// Waits (≤ 10 s) until `series` reaches `at_least`, and returns it.
    #[track_caller]
    pub fn wait_metric(&self, series: &str, at_least: f64) -> f64 {
        let mut last = None;
        let ok = wait_until(Duration::from_secs(10), || {
            last = self.metrics().get(series);
            last.is_some_and(|v| v >= at_least)
        });
        assert!(ok, "{series} stayed at {last:?}, expected ≥ {at_least}");
        last.unwrap()
    }

    // ---- WebSocket ----

    /// A WebSocket client (not signed in).
    #[track_caller]
    pub fn ws(&self) -> Ws {
        Ws::connect(self.addr)
    }

    /// A WebSocket client signed in with `token`.
    #[track_caller]
    pub fn ws_signed_in(&self, token: &str) -> Ws {
        let mut ws = self.ws();
        ws.sign_in(token);
        ws
    }

    /// A raw WebSocket connection (handshake done, nothing sent).
    #[track_caller]
    pub fn raw_ws(&self) -> RawWs {
        RawWs::connect(self.addr)
    }

    /// A raw WebSocket on `path` (e.g. the echo endpoint).
    #[track_caller]
    pub fn raw_ws_at(&self, path: &str) -> RawWs {
        RawWs::over_at(tcp_connect(self.addr), path)
    }
}

/// A user as sign-in returned it.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: i64,
    pub username: String,
    pub token: String,
}

impl Account {
    /// Checks a register/login answer (PROTOCOL §1.2) and reads it.
    #[track_caller]
    pub fn from_sign_in(username: &str, reply: &Value) -> Account {
        assert_eq!(reply["code"], CODE_OK, "sign-in of {username}: {reply}");
        assert_eq!(
            reply["msg"], MSG_LOGGED_IN,
            "sign-in of {username}: {reply}"
        );
        let data = &reply["data"];
        let Some(token) = data["t"].as_str().map(str::to_string) else {
            panic!("no data.t: {reply}");
        };
        assert!(!token.is_empty(), "empty data.t: {reply}");
        let user = &data["user"];
        let Some(id) = user["id"].as_i64() else {
            panic!("no data.user.id: {reply}");
        };
        assert!(id > 0, "user id {id}: {reply}");
        assert_eq!(user["username"], username, "{reply}");
        assert!(user["nickname"].is_string(), "data.user.nickname: {reply}");
        assert!(user["avatar"].is_string(), "data.user.avatar: {reply}");
        assert!(user["status"].is_i64(), "data.user.status: {reply}");
        Account {
            id,
            username: username.to_string(),
            token,
        }
    }
}

/// Receives frames until one with this Cmd (bounded: notices of the setup
/// may come first).
#[track_caller]
pub fn recv_cmd(ws: &mut Ws, cmd: i64) -> Value {
    for _ in 0..20 {
        let frame = ws.recv_json();
        if frame["Cmd"] == cmd {
            return frame;
        }
    }
    panic!("no Cmd {cmd} within 20 frames");
}

/// Makes `a` and `b` friends through the REST flow.
#[track_caller]
pub fn befriend(node: &Node, a: &Account, b: &Account) {
    let asked = node.api_as(
        &a.token,
        "/api/v1/im/friend/add/request",
        &[
            ("username", &b.username),
            ("channel", "test"),
            ("reason", "hi"),
        ],
    );
    expect_ok(&asked, "成功发送添加请求");
    let accepted = node.api_as(
        &b.token,
        "/api/v1/im/friend/add/handle",
        &[("f_uid", &a.id.to_string()), ("status", "1")],
    );
    expect_ok(&accepted, "处理成功");
}

// ---------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------

/// For each listed `fn(Store)`, one test on SQLite (module `sqlite`) and one
/// on MariaDB (module `mariadb`).
#[macro_export]
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $test() { super::$test($crate::common::Store::Sqlite) })*
        }
        mod mariadb {
            $(#[test] fn $test() { super::$test($crate::common::Store::Mysql) })*
        }
    };
}

/// `TEST_MYSQL_URL` or the default, after making sure its database exists.
pub fn mysql_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        use mysql::prelude::Queryable;
        let url = std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.into());
        let opts =
            mysql::Opts::from_url(&url).unwrap_or_else(|e| panic!("TEST_MYSQL_URL {url:?}: {e}"));
        let db = opts
            .get_db_name()
            .unwrap_or_else(|| panic!("TEST_MYSQL_URL {url:?} names no database"))
            .to_string();
        assert!(
            !db.is_empty() && db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "unexpected database name {db:?}"
        );
        let server = mysql::OptsBuilder::from_opts(opts)
            .db_name(None::<String>)
            .tcp_connect_timeout(Some(Duration::from_secs(5)));
        let mut conn = mysql::Conn::new(server).unwrap_or_else(|e| {
            panic!(
                "cannot reach MariaDB at {url} ({e}); start it \
                 (start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd) \
                 or set TEST_MYSQL_URL"
            )
        });
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {db}: {e}"));
        url
    })
    .clone()
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// A username no other test, test process or earlier run uses:
/// prefix + time + pid + counter, ASCII letters and digits, ≤ 20 chars.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    assert!(prefix.len() <= 6 && prefix.bytes().all(|b| b.is_ascii_alphabetic()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = format!(
        "{prefix}{}{}{}",
        base36(secs, 6),
        base36(std::process::id() as u64, 5),
        base36(n as u64, 3)
    );
    assert!((6..=20).contains(&name.len()), "{name}");
    name
}

fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    // Keep the lowest `width` digits: the name stays bounded.
    String::from_utf8(out[out.len() - width..].to_vec()).unwrap()
}

/// Sends a chat message over the socket (Cmd 20, text).
pub fn socket_send(ws: &mut Ws, ope: i64, to: i64, body: &str, cid: &str) {
    ws.send_json(&json!({"Cmd": 20, "Ope": ope, "ToId": to, "Type": 0, "Body": body, "Cid": cid}));
}

/// A socket signed in and done catching up (Cmd 30 answered after any
/// pending message).
pub fn caught_up(node: &Node, who: &Account) -> Ws {
    let mut ws = node.ws_signed_in(&who.token);
    ws.send_json(&json!({"Cmd": 30}));
    recv_cmd(&mut ws, 31);
    ws
}

/// `size` deterministic, incompressible bytes (xorshift64): file contents
/// that no layer can shrink.
pub fn file_bytes(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A number unlikely to come up again in this or any other test process, in
/// this run or a later one: the clock, the process id and a counter, mixed
/// (splitmix64's finaliser) so that every bit depends on all three and any
/// `% n` of it is a fair draw.
pub fn fresh_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z =
        nanos ^ (u64::from(std::process::id()) << 40) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Polls `cond` every 50 ms for at most `within`.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Now, in unix seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The claims of a JWT, read without checking its signature.
#[track_caller]
pub fn jwt_claims(token: &str) -> Value {
    match jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token) {
        Ok(claims) => claims,
        Err(e) => panic!("not a JWT {token:?}: {e}"),
    }
}

/// An HS256 JWT over `claims`, signed with `secret`.
pub fn sign_jwt(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a JWT")
}

/// Base64url without padding (JWT segments).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Checks that a server frame has the eight keys of PROTOCOL §2 and the
/// given Cmd, and returns it.
#[track_caller]
pub fn assert_server_frame(frame: &Value, cmd: i64) -> &Value {
    for key in ["Cmd", "FromId", "ToId", "Ope", "Type", "Id", "Time"] {
        assert!(
            frame[key].is_i64(),
            "{key} missing or not an integer: {frame}"
        );
    }
    assert!(
        frame["Body"].is_string(),
        "Body missing or not a string: {frame}"
    );
    assert_eq!(frame["Cmd"], cmd, "unexpected frame: {frame}");
    frame
}

/// Checks a notice push (PROTOCOL §2.2: Type 10, no stored message) with
/// these Cmd, FromId, ToId, Ope and Body.
#[track_caller]
pub fn assert_notice(frame: &Value, cmd: i64, from: i64, to: i64, ope: i64, body: &str) {
    assert_server_frame(frame, cmd);
    assert_eq!(
        (&frame["FromId"], &frame["ToId"], &frame["Ope"]),
        (&json!(from), &json!(to), &json!(ope)),
        "FromId, ToId, Ope of {frame}"
    );
    assert_eq!(frame["Type"], 10, "{frame}");
    assert_eq!(frame["Id"], 0, "{frame}");
    assert_eq!(frame["Body"], body, "{frame}");
}

/// Checks a successful API answer (code 0, this `msg`, a refreshed token in
/// `data.t`) and returns its `data`.
#[track_caller]
pub fn expect_ok(reply: &Value, msg: &str) -> Value {
    assert_eq!(reply["code"], CODE_OK, "{reply}");
    assert_eq!(reply["msg"], msg, "{reply}");
    assert!(reply["data"]["t"].is_string(), "no data.t: {reply}");
    reply["data"].clone()
}

/// The `Id` of every item of a JSON list.
#[track_caller]
pub fn ids(list: &Value) -> Vec<i64> {
    match list.as_array() {
        Some(items) => items.iter().map(|i| i["Id"].as_i64().unwrap()).collect(),
        None => panic!("not a list: {list}"),
    }
}

/// Checks a refused API answer: code 1000, this `msg`, `data` null.
#[track_caller]
pub fn expect_fail(reply: &Value, msg: &str) {
    assert_eq!(reply["code"], CODE_FAIL, "{reply}");
    assert_eq!(reply["msg"], msg, "{reply}");
    assert!(reply["data"].is_null(), "{reply}");
}

/// Checks a system frame (Cmd 2, 4, 31: FromId 0, ToId 0, Ope 2, Type 10).
#[track_caller]
pub fn assert_system_frame(frame: &Value, cmd: i64) {
    assert_server_frame(frame, cmd);
    assert_eq!(frame["FromId"], 0, "{frame}");
    assert_eq!(frame["ToId"], 0, "{frame}");
    assert_eq!(frame["Ope"], 2, "{frame}");
    assert_eq!(frame["Type"], 10, "{frame}");
}

fn configure(stream: &TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
}

/// A loopback connection with the test timeouts.
#[track_caller]
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    configure(&stream);
    stream
}

/// A connection from `source` (e.g. `127.0.0.2`: all of 127.0.0.0/8 is
/// this host's), bound before connecting.
#[track_caller]
pub fn tcp_connect_from(addr: SocketAddr, source: &str) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let source: std::net::IpAddr = source.parse().expect("a source address");
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr} from {source}: {e}"));
    let stream: TcpStream = socket.into();
    configure(&stream);
    stream
}

/// A loopback connection whose receive buffer is as small as the kernel
/// allows (set before connecting, so the advertised window stays small).
#[track_caller]
pub fn tcp_connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    tcp_connect_rcvbuf(addr, 1024)
}

/// A connection whose `SO_RCVBUF` is set to `bytes` before connecting (the
/// kernel doubles it for its bookkeeping), so the window it advertises
/// stays that small.
#[track_caller]
pub fn tcp_connect_rcvbuf(addr: SocketAddr, bytes: usize) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let stream: TcpStream = socket.into();
    configure(&stream);
    stream
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

// ---------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------

/// An HTTP request, written byte for byte as built.
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: None,
        }
    }

    #[track_caller]
    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    /// A POST; it carries `Content-Length` even when the body is empty.
    pub fn post(target: &str) -> Request {
        let mut req = Request::new("POST", target);
        req.body = Some(Vec::new());
        req
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn login_token(self, token: &str) -> Request {
        self.header("Login-Token", token)
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(self, params: &[(&str, &str)]) -> Request {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        self.body("application/x-www-form-urlencoded", body.into_bytes())
    }

    /// A `multipart/form-data` body: text `fields`, then `files` as
    /// `(field, file name, bytes)`.
    pub fn multipart(self, fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> Request {
        const BOUNDARY: &str = "weimTestBoundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes());
        }
        for (name, filename, data) in files {
            body.extend(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").bytes());
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend(format!("--{BOUNDARY}--\r\n").bytes());
        self.body(&format!("multipart/form-data; boundary={BOUNDARY}"), body)
    }

    /// An `application/json` body.
    #[track_caller]
    pub fn json(self, value: &Value) -> Request {
        self.body("application/json", value.to_string().into_bytes())
    }

    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Request {
        self.headers
            .push(("Content-Type".to_string(), content_type.to_string()));
        self.body = Some(body);
        self
    }

    /// The bytes on the wire: request line, `Host` (unless the headers
    /// name one), the headers, `Content-Length` when there is a body, the
    /// body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            out.push_str(&format!("Host: {TEST_HOST}\r\n"));
        }
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = &self.body {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if let Some(body) = &self.body {
            bytes.extend_from_slice(body);
        }
        bytes
    }
}

/// A parsed HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            ),
        }
    }

    /// The `{code, msg, data}` envelope (PROTOCOL §1.1).
    #[track_caller]
    pub fn envelope(&self) -> Value {
        let v = self.json();
        assert!(v["code"].is_i64(), "envelope without integer code: {v}");
        assert!(v["msg"].is_string(), "envelope without string msg: {v}");
        assert!(v.get("data").is_some(), "envelope without data: {v}");
        v
    }

    /// The envelope of an API answer, which is always HTTP 200.
    #[track_caller]
    pub fn api(&self) -> Value {
        assert_eq!(self.status, 200, "HTTP status; body {:?}", self.text());
        self.envelope()
    }

    /// Asserts a protocol-level error: HTTP `status` with an envelope whose
    /// code is not 0.
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "HTTP status; body {:?}", self.text());
        let v = self.envelope();
        assert_ne!(v["code"], CODE_OK, "error answered with code 0: {v}");
        v
    }
}

/// One HTTP/1.1 connection; several requests may go over it.
pub struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Headers of a response may not exceed this (the client's own bound).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Bodies of a response may not exceed this (the client's own bound).
const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

impl Http {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Http {
        Http::over(tcp_connect(addr))
    }

    /// HTTP over an already connected stream.
    pub fn over(stream: TcpStream) -> Http {
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes bytes as they are.
    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    /// Like `send_raw`, but tolerates the server having closed already.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    #[track_caller]
    pub fn send(&mut self, req: &Request) {
        self.send_raw(&req.to_bytes());
    }

    /// Sends `req` and reads its response.
    #[track_caller]
    pub fn request(&mut self, req: &Request) -> Response {
        self.send(req);
        self.read_response()
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response; panics on timeout, reset or early end.
    #[track_caller]
    pub fn read_response(&mut self) -> Response {
        match self.try_read_response() {
            Ok(resp) => resp,
            Err(e) if is_timeout(&e) => panic!("no HTTP response within {IO_TIMEOUT:?}"),
            Err(e) => panic!("reading an HTTP response: {e}"),
        }
    }

    pub fn try_read_response(&mut self) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_RESPONSE_HEAD {
                return Err(io::Error::other("response head over 64 KiB"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a full response head (got {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(io::Error::other(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| io::Error::other(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            resp.body = self.read_chunked()?;
        } else if let Some(len) = resp.header("Content-Length") {
            let len: usize = len
                .parse()
                .map_err(|_| io::Error::other(format!("bad Content-Length {len:?}")))?;
            if len > MAX_RESPONSE_BODY {
                return Err(io::Error::other("response body over 16 MiB"));
            }
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a response body",
                    ));
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else {
            // No length: the body runs to the end of the connection.
            while self.fill()? > 0 {
                if self.buf.len() > MAX_RESPONSE_BODY {
                    return Err(io::Error::other("response body over 16 MiB"));
                }
            }
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.fill()? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "in chunk size",
                    ));
                }
            };
            let size_line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {size_line:?}")))?;
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                if self.fill()? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "in chunk"));
                }
            }
            if size == 0 {
                // No trailers expected.
                self.buf.drain(..2);
                return Ok(body);
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if body.len() > MAX_RESPONSE_BODY {
                return Err(io::Error::other("response body over 16 MiB"));
            }
        }
    }

    /// Waits at most `within` for the server to end the connection (end of
    /// stream or reset), discarding whatever it sends first. Returns how
    /// long it took, or `None` if the connection was still open.
    pub fn wait_closed(&mut self, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        let deadline = start + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e) if is_reset(&e) => return Some(start.elapsed()),
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("waiting for close: {e}"),
            }
        }
    }

    /// True if nothing arrives and the connection stays open for `quiet`.
    pub fn is_open_for(&mut self, quiet: Duration) -> bool {
        self.stream.set_read_timeout(Some(quiet)).unwrap();
        let mut byte = [0u8; 1];
        let open = match self.stream.read(&mut byte) {
            Ok(_) => false,
            Err(e) => is_timeout(&e),
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        open
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/// A `/metrics` page.
pub struct Metrics(pub String);

impl Metrics {
    fn samples(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.lines().filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let split = match line.find('{') {
                Some(open) if line[..open].find(' ').is_none() => line.find('}')? + 1,
                _ => line.find(char::is_whitespace)?,
            };
            let (series, rest) = line.split_at(split);
            Some((series.trim(), rest.split_whitespace().next()?))
        })
    }

    /// The value of one series, written as the exposition writes it:
    /// `name` or `name{label="value"}`.
    #[track_caller]
    pub fn get(&self, series: &str) -> Option<f64> {
        let wanted: String = series.chars().filter(|c| !c.is_whitespace()).collect();
        self.samples().find_map(|(s, v)| {
            let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            if s == wanted {
                v.parse().ok()
            } else {
                None
            }
        })
    }

    /// Like `get`, but the series must be there.
    #[track_caller]
    pub fn value(&self, series: &str) -> f64 {
        match self.get(series) {
            Some(v) => v,
            None => panic!("no series {series} in /metrics:\n{}", self.0),
        }
    }

    /// True if some sample of metric `name` is present (any labels).
    pub fn has(&self, name: &str) -> bool {
        self.samples().any(|(s, _)| {
            s == name
                || s.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{'))
        })
    }
}

// ---------------------------------------------------------------------------
// WebSocket: a normal client (tungstenite)
// ---------------------------------------------------------------------------

/// How a WebSocket connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The server sent a close frame with this status code.
    Code(u16),
    /// The server sent a close frame without a status code.
    NoCode,
    /// The connection ended without a close frame (end of stream or reset).
    Dropped,
}

/// A normal WebSocket client on `/ws`.
pub struct Ws {
    ws: tungstenite::WebSocket<TcpStream>,
}

impl Ws {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Ws {
        Ws::over(addr, tcp_connect(addr))
    }

    /// Does the client handshake over an already connected stream.
    #[track_caller]
    pub fn over(addr: SocketAddr, stream: TcpStream) -> Ws {
        let url = format!("ws://{addr}/ws");
        let (ws, resp) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        assert_eq!(resp.status().as_u16(), 101);
        Ws { ws }
    }

    #[track_caller]
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .expect("send a text message");
    }

    #[track_caller]
    pub fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    #[track_caller]
    pub fn ping(&mut self, payload: &[u8]) {
        self.ws
            .send(Message::Ping(payload.to_vec().into()))
            .expect("send a ping");
    }

    /// Sends `{"Cmd":3,"Body":token}` and asserts the Cmd 4 answer.
    #[track_caller]
    pub fn sign_in(&mut self, token: &str) -> Value {
        self.send_json(&json!({"Cmd": 3, "Body": token}));
        let reply = self.recv_json();
        assert_system_frame(&reply, 4);
        assert_eq!(reply["Body"], WS_AUTH_OK, "{reply}");
        reply
    }

    /// The next message (tungstenite answers pings by itself).
    pub fn recv(&mut self) -> Result<Message, tungstenite::Error> {
        self.ws.read()
    }

    /// The next text message as JSON; skips pings and pongs; panics on
    /// timeout, close or anything but JSON text.
    #[track_caller]
    pub fn recv_json(&mut self) -> Value {
        for _ in 0..100 {
            match self.ws.read() {
                Ok(Message::Text(text)) => match serde_json::from_str(text.as_str()) {
                    Ok(v) => return v,
                    Err(e) => panic!("server frame is not JSON ({e}): {text}"),
                },
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(Message::Close(frame)) => panic!("closed by the server: {frame:?}"),
                Ok(other) => panic!("unexpected message: {other:?}"),
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                    panic!("no message within {IO_TIMEOUT:?}")
                }
                Err(e) => panic!("reading a message: {e}"),
            }
        }
        panic!("only pings and pongs")
    }

    /// The next text message as JSON within `within`, or `None` when none
    /// arrives in time; panics on close or anything but JSON text.
    #[track_caller]
    pub fn recv_json_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(text)) => match serde_json::from_str(text.as_str()) {
                    Ok(v) => break Some(v),
                    Err(e) => panic!("server frame is not JSON ({e}): {text}"),
                },
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                Ok(Message::Close(frame)) => panic!("closed by the server: {frame:?}"),
                Ok(other) => panic!("unexpected message: {other:?}"),
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => break None,
                Err(e) => panic!("reading a message: {e}"),
            }
        };
        self.ws
            .get_ref()
            .set_read_timeout(Some(IO_TIMEOUT))
            .unwrap();
        result
    }

    /// Asserts that no message (other than ping/pong) arrives for `quiet`.
    #[track_caller]
    pub fn expect_silence(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                Ok(other) => panic!("expected nothing, got {other:?}"),
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => break,
                Err(e) => panic!("expected nothing, got error {e}"),
            }
        }
        self.ws
            .get_ref()
            .set_read_timeout(Some(IO_TIMEOUT))
            .unwrap();
    }

    /// Reads until the connection ends (≤ `within`, ≤ 10,000 messages);
    /// returns how, or `None` if still open at the deadline.
    pub fn wait_closed(&mut self, within: Duration) -> Option<Closed> {
        let deadline = Instant::now() + within;
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Close(Some(frame))) => return Some(Closed::Code(frame.code.into())),
                Ok(Message::Close(None)) => return Some(Closed::NoCode),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => return None,
                Err(_) => return Some(Closed::Dropped),
            }
        }
        None
    }

    /// The status code of the close frame the server sends next (other
    /// messages before it are skipped); panics if there is none.
    #[track_caller]
    pub fn expect_close(&mut self, within: Duration) -> u16 {
        match self.wait_closed(within) {
            Some(Closed::Code(code)) => code,
            other => panic!("expected a close frame with a status code, got {other:?}"),
        }
    }

    /// Sends a close frame with `code`.
    pub fn close(&mut self, code: u16) {
        let frame = tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: "bye".into(),
        };
        let _ = self.ws.close(Some(frame));
        let _ = self.ws.flush();
    }

    pub fn inner(&mut self) -> &mut tungstenite::WebSocket<TcpStream> {
        &mut self.ws
    }
}

// ---------------------------------------------------------------------------
// WebSocket: a raw client that writes any frame
// ---------------------------------------------------------------------------

/// A frame as the server sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE);
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, OP_TEXT, "not a text frame: {self:?}");
        match serde_json::from_slice(&self.payload) {
            Ok(v) => v,
            Err(e) => panic!(
                "server frame is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.payload)
            ),
        }
    }
}

/// One frame on the wire. `mask` None writes an unmasked frame.
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked frame (as a client must send).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, Some([0x37, 0xfa, 0x21, 0x3d]), payload)
}

/// The payload of a close frame.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// The request of a valid client handshake on `/ws`.
pub fn ws_handshake(key: &str) -> Request {
    ws_handshake_at("/ws", key)
}

/// The request of a valid client handshake on `path`.
pub fn ws_handshake_at(path: &str, key: &str) -> Request {
    Request::get(path)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", key)
        .header("Sec-WebSocket-Version", "13")
}

/// A WebSocket connection driven frame by frame.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    pace: Option<Pace>,
}

/// A reading pace: at most `rate` bytes a second, `chunk` bytes a read.
struct Pace {
    rate: u64,
    chunk: usize,
    start: Instant,
    got: u64,
}

/// The largest server frame the raw client accepts.
const MAX_SERVER_FRAME: usize = 16 * 1024 * 1024;

impl RawWs {
    /// Connects and completes a valid handshake; checks the 101 answer.
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> RawWs {
        RawWs::over(tcp_connect(addr))
    }

    /// Completes a valid handshake over an already connected stream (e.g.
    /// one with a small receive buffer); checks the 101 answer.
    #[track_caller]
    pub fn over(stream: TcpStream) -> RawWs {
        RawWs::over_at(stream, "/ws")
    }

    /// Completes a valid handshake on `path` over a connected stream;
    /// checks the 101 answer.
    #[track_caller]
    pub fn over_at(stream: TcpStream, path: &str) -> RawWs {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut http = Http::over(stream);
        let resp = http.request(&ws_handshake_at(path, key));
        assert_eq!(resp.status, 101, "handshake answer: {resp:?}");
        assert!(
            resp.header("Upgrade")
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
            "Upgrade header: {resp:?}"
        );
        assert!(
            resp.header("Connection")
                .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
            "Connection header: {resp:?}"
        );
        assert_eq!(
            resp.header("Sec-WebSocket-Accept"),
            Some(tungstenite::handshake::derive_accept_key(key.as_bytes()).as_str()),
            "Sec-WebSocket-Accept: {resp:?}"
        );
        RawWs {
            stream: http.stream,
            buf: http.buf,
            pace: None,
        }
    }

    /// From now on reads at most `rate` bytes a second, `chunk` bytes at a
    /// time (a slow client: the rest waits in the kernel, then in the
    /// server's queue).
    pub fn pace(&mut self, rate: u64, chunk: usize) {
        assert!(rate > 0 && chunk > 0);
        self.pace = Some(Pace {
            rate,
            chunk,
            start: Instant::now(),
            got: 0,
        });
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads exactly what the kernel holds for this socket now (`FIONREAD`)
    /// into the buffer, and returns how many bytes that was. Whatever
    /// arrives meanwhile stays unread.
    #[track_caller]
    pub fn read_available(&mut self) -> usize {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which points
        // at a live c_int; the descriptor belongs to `self.stream`.
        let rc = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
        let n = n.max(0) as usize;
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        let mut got = 0;
        while got < n {
            match self.stream.read(&mut self.buf[start + got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.buf.truncate(start + got);
        got
    }

    /// The next complete frame already read into the buffer, if any (no
    /// reading from the socket).
    pub fn buffered_frame(&mut self) -> Option<Frame> {
        let (frame, used) = parse_server_frame(&self.buf).ok()??;
        self.buf.drain(..used);
        Some(frame)
    }

    #[track_caller]
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write frame bytes");
    }

    /// Like `send_bytes`, but tolerates the server having closed already.
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// A masked, final text frame.
    #[track_caller]
    pub fn send_text(&mut self, text: &str) {
        self.send_bytes(&client_frame(true, OP_TEXT, text.as_bytes()));
    }

    #[track_caller]
    pub fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let mut want = chunk.len();
        if let Some(pace) = &self.pace {
            let due = pace.start + Duration::from_secs_f64(pace.got as f64 / pace.rate as f64);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            want = want.min(pace.chunk);
        }
        let n = self.stream.read(&mut chunk[..want])?;
        if let Some(pace) = &mut self.pace {
            pace.got += n as u64;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next frame; `Ok(None)` at end of stream. Server frames must be
    /// unmasked.
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection ended inside a frame",
                ));
            }
        }
    }

    /// The next frame; panics on timeout or end of stream.
    #[track_caller]
    pub fn recv_frame(&mut self) -> Frame {
        match self.read_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("connection ended, expected a frame"),
            Err(e) if is_timeout(&e) => panic!("no frame within the read timeout"),
            Err(e) => panic!("reading a frame: {e}"),
        }
    }

    /// The next text frame as JSON (pings and pongs skipped).
    #[track_caller]
    pub fn recv_json(&mut self) -> Value {
        for _ in 0..100 {
            let frame = self.recv_frame();
            match frame.opcode {
                OP_PING | OP_PONG => continue,
                OP_TEXT => {
                    assert!(frame.fin, "fragmented server message: {frame:?}");
                    return frame.json();
                }
                _ => panic!("expected a text frame, got {frame:?}"),
            }
        }
        panic!("only pings and pongs")
    }

    /// Reads until a close frame and returns its status code; panics if the
    /// connection ends without one or on timeout. Text frames before it
    /// are skipped.
    #[track_caller]
    pub fn expect_close(&mut self) -> u16 {
        for _ in 0..1000 {
            match self.read_frame() {
                Ok(Some(frame)) if frame.opcode == OP_CLOSE => match frame.close_code() {
                    Some(code) => return code,
                    None => panic!("close frame without status code"),
                },
                Ok(Some(_)) => {}
                Ok(None) => panic!("connection ended without a close frame"),
                Err(e) if is_timeout(&e) => panic!("no close frame within the read timeout"),
                Err(e) => panic!("expected a close frame: {e}"),
            }
        }
        panic!("no close frame within 1000 frames")
    }

    /// Reads until the connection ends (≤ `within`): a close frame, end of
    /// stream or reset. Pings are not answered: the client stays silent.
    pub fn wait_closed(&mut self, within: Duration) -> Option<Closed> {
        let deadline = Instant::now() + within;
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.read_frame() {
                Ok(Some(frame)) if frame.opcode == OP_CLOSE => {
                    return Some(match frame.close_code() {
                        Some(code) => Closed::Code(code),
                        None => Closed::NoCode,
                    })
                }
                Ok(Some(_)) => {}
                Ok(None) => return Some(Closed::Dropped),
                Err(e) if is_timeout(&e) => return None,
                Err(_) => return Some(Closed::Dropped),
            }
        }
        None
    }

    /// After the close handshake: the server ends the TCP connection.
    #[track_caller]
    pub fn expect_end(&mut self, within: Duration) {
        self.stream.set_read_timeout(Some(within)).unwrap();
        match self.read_frame() {
            Ok(None) => {}
            Err(e) if is_reset(&e) => {}
            Ok(Some(frame)) => panic!("expected the end of the connection, got {frame:?}"),
            Err(e) => panic!("expected the end of the connection: {e}"),
        }
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }
}

/// Parses one server frame from `buf`: `Ok(None)` if incomplete.
fn parse_server_frame(buf: &[u8]) -> io::Result<Option<(Frame, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = (buf[0] >> 4) & 7;
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 != 0 {
        return Err(io::Error::other("the server sent a masked frame"));
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if len > MAX_SERVER_FRAME {
        return Err(io::Error::other(format!("server frame of {len} bytes")));
    }
    if buf.len() < at + len {
        return Ok(None);
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    Ok(Some((
        Frame {
            fin,
            rsv,
            opcode,
            payload,
        },
        at,
    )))
}
