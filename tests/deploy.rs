//! The deployment files, run for real: `deploy/nginx-weim.conf` under
//! Debian's nginx in front of real nodes, `systemd/weim.service` (and the
//! pinned-cores drop-in) through `systemd-analyze verify`, the readiness
//! datagrams a node sends to `NOTIFY_SOCKET` (`Type=notify`), the refusal of
//! node-local attachments in a cluster, and the warning of a node with more
//! reactors than CPUs.
//!
//! nginx runs as a child of the test (`-p <tmpdir> -c <generated conf>`,
//! `daemon off`, pid, logs and temporary files in the tmpdir) on a free
//! loopback port; the generated configuration includes a copy of the
//! committed server block in which only the node addresses and the listen
//! port are replaced. A missing `nginx` or `systemd-analyze` fails the test
//! unless `TEST_ALLOW_MISSING_TOOLS=1` (then it is skipped with a message);
//! `scripts/test.sh` installs both.
//!
//! The nginx test with two cluster nodes needs `TEST_ETCD_ENDPOINTS`,
//! `TEST_REDIS_URL` and `TEST_MYSQL_URL` like the cluster tests.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The committed files under test.
fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A program of the host (looked up in `PATH`, then in the sbin
/// directories a non-root `PATH` may lack), or `None` when it is absent
/// and `TEST_ALLOW_MISSING_TOOLS=1` allows skipping.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("TEST_ALLOW_MISSING_TOOLS").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED: `{name}` is not installed (Debian package {package}) and \
                 TEST_ALLOW_MISSING_TOOLS=1 allows skipping"
            );
            return None;
        }
        panic!(
            "`{name}` is not installed: apt-get install {package} (scripts/test.sh does), \
             or set TEST_ALLOW_MISSING_TOOLS=1 to skip this test"
        );
    }
    found
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!(
            "{name} is not set: this test runs cluster nodes on real etcd, Redis and MariaDB. \
             Run scripts/test.sh (it starts them and exports TEST_ETCD_ENDPOINTS, \
             TEST_REDIS_URL and TEST_MYSQL_URL), or export them yourself."
        ),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Replaces every occurrence of `from` (which must occur `times` times:
/// the committed file changed shape otherwise, and this test with it).
#[track_caller]
fn replace(text: &str, from: &str, to: &str, times: usize) -> String {
    assert_eq!(
        text.matches(from).count(),
        times,
        "{from:?} in deploy/nginx-weim.conf"
    );
    text.replace(from, to)
}

/// A waited-for child process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

/// nginx running the committed server block in front of `upstreams`.
struct Nginx {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _process: Process,
}

impl Nginx {
    /// Starts nginx with the three upstream servers of the example pointed
    /// at `upstreams` (in turn: with one node, all three are that node).
    fn start(bin: &Path, upstreams: &[SocketAddr]) -> Nginx {
        let dir = tempfile::tempdir().expect("temporary directory");
        let d = dir.path().display().to_string();
        let port = free_port();
        let committed =
            std::fs::read_to_string(repo_file("deploy/nginx-weim.conf")).expect("read the example");
        let mut conf = replace(
            &committed,
            "listen 80 default_server;",
            &format!("listen 127.0.0.1:{port} default_server;"),
            1,
        );
        for (i, example) in ["10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080"]
            .iter()
            .enumerate()
        {
            let node = upstreams[i % upstreams.len()];
            conf = replace(
                &conf,
                &format!("server {example} "),
                &format!("server {node} "),
                1,
            );
        }
        std::fs::write(dir.path().join("weim.conf"), conf).expect("write weim.conf");
        // The main context Debian's /etc/nginx/nginx.conf would give, with
        // everything under the temporary directory. One process (no
        // master): it stays the test's child and keeps root's access to
        // the temporary directory.
        let main = format!(
            "daemon off;\n\
             master_process off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
             access_log {d}/access.log;\n\
             client_body_temp_path {d}/client_body;\n\
             proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             include {d}/weim.conf;\n\
             }}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, main).expect("write nginx.conf");
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("stderr.log")).expect("stderr.log"));
        let mut process = Process(cmd.spawn().expect("spawn nginx"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            let exited = process.0.try_wait().expect("try_wait");
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "nginx did not start ({exited:?}):\n{}\n{}",
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            addr,
            dir,
            _process: process,
        }
    }

    fn http(&self) -> Http {
        Http::connect(self.addr)
    }

    /// A connection to nginx from loopback address `from` (127.0.0.x).
    fn http_from(&self, from: &str) -> Http {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let local: SocketAddr = format!("{from}:0").parse().unwrap();
        socket.bind(&local.into()).expect("bind the client address");
        socket
            .connect_timeout(&self.addr.into(), IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to nginx from {from}: {e}"));
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Http::over(stream)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// `GET path` with `Connection: close`: the status, the headers' text and
/// the whole body (for bodies larger than the harness reads).
fn get_whole(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = tcp_connect(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {TEST_HOST}\r\nConnection: close\r\n\r\n"
    )
    .expect("write the request");
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read the response");
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, head, all[end + 4..].to_vec())
}

const UPLOAD: &str = "/api/v1/im/chat/upload";

/// A 19 MiB upload through nginx to a two-node cluster whose nodes share
/// the attachment directory, downloaded back through nginx and from each
/// node; the body limits per route; a WebSocket through nginx receiving a
/// `sendToAll` also sent through it.
#[test]
fn nginx_example_carries_uploads_downloads_and_websockets_to_a_cluster() {
    let Some(nginx_bin) = tool("nginx", "nginx") else {
        return;
    };
    let etcd = required_env("TEST_ETCD_ENDPOINTS");
    let redis = required_env("TEST_REDIS_URL");
    required_env("TEST_MYSQL_URL");
    let files = tempfile::tempdir().expect("shared attachment directory");
    let base = unique_name("dep");
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| {
            Node::builder()
                .store(Store::Mysql)
                .env("WEIM_CLUSTER_ENABLED", "true")
                .env("WEIM_CLUSTER_NODE_ID", &format!("{base}-{i}"))
                .env("WEIM_CLUSTER_ETCD", &etcd)
                .env("WEIM_CLUSTER_REDIS", &redis)
                .env("WEIM_CLUSTER_LEASE_TTL", "3s")
                .env("WEIM_ATTACH_DIR", &files.path().to_string_lossy())
                .env("WEIM_ATTACH_SHARED", "true")
                .start()
        })
        .collect();
    for n in &nodes {
        n.wait_metric("weim_bus_up", 1.0);
    }
    let nginx = Nginx::start(&nginx_bin, &[nodes[0].addr, nodes[1].addr]);

    // An account, through nginx.
    let name = unique_name("dep");
    let reply = nginx
        .http()
        .request(
            &Request::post("/api/v1/register").form(&[("username", &name), ("password", PASSWORD)]),
        )
        .api();
    let account = Account::from_sign_in(&name, &reply);

    // 19 MiB up (limits.max_upload is 20 MiB; nginx's own default is 1 MiB).
    let data = file_bytes(19 << 20);
    let resp = nginx.http().request(
        &Request::post(UPLOAD)
            .login_token(&account.token)
            .multipart(&[("type", "6")], &[("file", "big.bin", &data)]),
    );
    assert_eq!(resp.status, 200, "upload through nginx: {}", resp.text());
    let reply = resp.api();
    assert_eq!(reply["code"], CODE_OK, "{reply}");
    let url = reply["data"]["url"].as_str().unwrap();
    let path = url[url.find("/files/").unwrap_or_else(|| panic!("{url}"))..].to_string();

    // Down again, through nginx (both nodes take turns) and from each node.
    for (what, addr) in [
        ("nginx", nginx.addr),
        ("nginx", nginx.addr),
        ("nginx", nginx.addr),
        ("nginx", nginx.addr),
        ("node 0", nodes[0].addr),
        ("node 1", nodes[1].addr),
    ] {
        let (status, head, body) = get_whole(addr, &path);
        assert_eq!(status, 200, "GET {path} from {what}: {head}");
        assert_eq!(body.len(), data.len(), "GET {path} from {what}: {head}");
        assert!(body == data, "GET {path} from {what}: other bytes");
    }

    // The upload routes allow limits.max_upload and no more; the other
    // routes keep limits.max_body. nginx answers 413 from the header.
    let too_big = |path: &str, len: usize| {
        let mut http = nginx.http();
        http.send_raw(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n\r\n"
            )
            .as_bytes(),
        );
        http.read_response().status
    };
    assert_eq!(too_big(UPLOAD, (20 << 20) + 1), 413);
    assert_eq!(too_big("/api/v1/user/update/avatar", (20 << 20) + 1), 413);
    assert_eq!(too_big("/api/v1/login", (1 << 20) + 1), 413);

    // A WebSocket through nginx gets a broadcast sent through nginx.
    let mut ws = Ws::connect(nginx.addr);
    ws.sign_in(&account.token);
    let body = unique_name("bc");
    let reply = nginx
        .http()
        .request(
            &Request::post("/ws/sendToAll")
                .header("Admin-Token", ADMIN_TOKEN)
                .form(&[("body", &body)]),
        )
        .api();
    assert_eq!(reply["code"], CODE_OK, "{reply}");
    let push = ws.recv_json();
    assert_server_frame(&push, -1);
    assert_eq!(push["Body"], body.as_str(), "{push}");
    drop(ws);

    // (The 413s above are logged as errors; no exchange with a node was.)
    let log = nginx.error_log();
    let upstream_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[error]") && l.contains("upstream"))
        .collect();
    assert!(
        upstream_errors.is_empty(),
        "nginx:\n{}",
        upstream_errors.join("\n")
    );
    // Leave etcd and Redis clean: drain.
    for n in &nodes {
        n.sigterm();
    }
    for n in &mut nodes {
        let status = n.wait_exit(Duration::from_secs(15));
        assert!(status.is_some_and(|s| s.success()), "drain: {status:?}");
    }
}

/// The node sees each client's own address through nginx (X-Forwarded-For
/// replaced by nginx, read because nginx is a trusted proxy), not nginx's
/// and not what the client wrote: the per-address login throttle blocks
/// the client that failed, whatever it claims, and only that one.
#[test]
fn nginx_example_passes_the_client_address_and_drops_a_spoofed_one() {
    let Some(nginx_bin) = tool("nginx", "nginx") else {
        return;
    };
    // Every loopback address is a trusted proxy here: had nginx appended to
    // the client's X-Forwarded-For instead of replacing it, the node would
    // walk past the client's real address to what it made up.
    let node = Node::builder()
        .env("WEIM_HTTP_TRUSTED_PROXIES", "127.0.0.0/8")
        .env("WEIM_AUTH_LOGIN_FAIL_LIMIT_IP", "2")
        .start();
    let nginx = Nginx::start(&nginx_bin, &[node.addr]);
    let login = |from: &str, claimed: &str| {
        let name = unique_name("nobody");
        let resp = nginx.http_from(from).request(
            &Request::post("/api/v1/login")
                .header("X-Forwarded-For", claimed)
                .header("X-Real-IP", claimed)
                .form(&[("username", &name), ("password", PASSWORD)]),
        );
        resp.api()["msg"].as_str().unwrap_or_default().to_string()
    };
    // 127.0.0.2 fails twice, claiming another address each time...
    assert_eq!(login("127.0.0.2", "198.51.100.1"), MSG_NO_SUCH_USER);
    assert_eq!(login("127.0.0.2", "198.51.100.2"), MSG_NO_SUCH_USER);
    // ... and is blocked, whatever it claims.
    assert_eq!(login("127.0.0.2", "198.51.100.3"), MSG_TOO_MANY_FAILURES);
    // Another client is not (the node does not count nginx's address), not
    // even claiming to be the blocked one.
    assert_eq!(login("127.0.0.3", "127.0.0.2"), MSG_NO_SUCH_USER);
    assert_eq!(login("127.0.0.4", "198.51.100.1"), MSG_NO_SUCH_USER);

    // The operations routes: only from the operators' addresses.
    let mut http = nginx.http_from("127.0.0.2");
    assert_eq!(http.request(&Request::get("/metrics")).status, 403);
    let resp = nginx.http().request(&Request::get("/metrics"));
    assert_eq!(resp.status, 200);
    assert!(resp.text().contains("weim_"), "{}", resp.text());
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

/// `systemd-analyze verify` of the committed unit (ExecStart pointing at
/// the built binary) with the pinned-cores drop-in: no error and no warning
/// about either file; and its offline security exposure.
#[test]
fn systemd_unit_and_drop_in_verify() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let unit = std::fs::read_to_string(repo_file("systemd/weim.service")).expect("read the unit");
    let bin = weim_binary();
    let unit = replace(
        &unit,
        "ExecStart=/usr/local/bin/weim ",
        &format!("ExecStart={} ", bin.to_string_lossy()),
        1,
    );
    std::fs::write(dir.path().join("weim.service"), unit).expect("write the unit");
    let drop_ins = dir.path().join("weim.service.d");
    std::fs::create_dir(&drop_ins).expect("drop-in directory");
    std::fs::copy(
        repo_file("systemd/pinned-cores.conf.example"),
        drop_ins.join("pinned-cores.conf"),
    )
    .expect("copy the drop-in");

    // The unit directory first in the search path, so the drop-in loads.
    let search_path = format!("{}:", dir.path().display());
    let out = Command::new(&analyze)
        .args(["verify", "weim.service"])
        .env("SYSTEMD_UNIT_PATH", &search_path)
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("weim.service") || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify warns:\n{}",
        ours.join("\n")
    );

    // What the unit must say (systemd-analyze only checks that it parses).
    let committed = std::fs::read_to_string(repo_file("systemd/weim.service")).unwrap();
    let lines: Vec<&str> = committed.lines().map(str::trim).collect();
    for line in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=weim",
        "UMask=0027",
        "RestartPreventExitStatus=2",
        "LoadCredential=config.yml:/etc/weim/config.yml",
        "SystemCallFilter=@system-service",
        "ProtectClock=yes",
        "ProtectKernelLogs=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(lines.contains(&line), "systemd/weim.service lacks {line}");
    }
    // A WEIM_* variable in the unit would silently win over the file.
    assert!(
        !lines.iter().any(|l| l.starts_with("Environment=")),
        "systemd/weim.service sets variables"
    );
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "weim.service"])
        .env("SYSTEMD_UNIT_PATH", &search_path)
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze security");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for weim.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{text}"));
    assert!(
        exposure <= 2.0,
        "exposure {exposure} (0 = locked down, 10 = exposed)"
    );

    // A misspelled key is reported this way: the check above can fail.
    let bad = std::fs::read_to_string(dir.path().join("weim.service"))
        .unwrap()
        .replace("UMask=", "UMsk=");
    std::fs::write(dir.path().join("weim.service"), bad).unwrap();
    let out = Command::new(&analyze)
        .args(["verify", "weim.service"])
        .env("SYSTEMD_UNIT_PATH", &search_path)
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze verify");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UMsk"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The node as a service
// ---------------------------------------------------------------------------

/// The `weim` binary with only the given `WEIM_*` variables (and the
/// process environment `extra`), an empty configuration file, its data and
/// its stderr (`stderr.log`) in `dir`.
fn spawn_weim(dir: &Path, weim: &[(&str, &str)], extra: &[(&str, &str)]) -> Process {
    let config = dir.join("empty.yml");
    std::fs::write(&config, b"").expect("write empty.yml");
    let mut cmd = Command::new(weim_binary());
    cmd.arg("--config").arg(&config);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEIM_") || key == "NOTIFY_SOCKET" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("WEIM_NODE_DATA_DIR", dir)
        .env("WEIM_NODE_REACTORS", "2")
        .env("WEIM_NODE_WORKERS", "2");
    for (k, v) in weim.iter().chain(extra) {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("stderr.log")).expect("stderr.log"));
    Process(cmd.spawn().expect("spawn weim"))
}

fn receive(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Starts a node with `NOTIFY_SOCKET=name` and checks its datagrams:
/// `READY=1` once the port accepts connections, `STOPPING=1` on SIGTERM.
fn check_notify(socket: &UnixDatagram, name: &str) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut node = spawn_weim(
        dir.path(),
        &[("WEIM_HTTP_LISTEN", &listen)],
        &[("NOTIFY_SOCKET", name)],
    );
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let ready = receive(socket, START_TIMEOUT)
        .unwrap_or_else(|| panic!("no datagram on {name} within {START_TIMEOUT:?}\n{}", log()));
    let lines: Vec<&str> = ready.lines().collect();
    assert!(lines.contains(&"READY=1"), "{ready:?}");
    assert!(
        lines.contains(&format!("STATUS=listening on {listen}").as_str()),
        "{ready:?}"
    );
    // Ready means accepting: the port answers at once.
    let addr: SocketAddr = listen.parse().unwrap();
    let resp = Http::connect(addr).request(&Request::get("/healthz"));
    assert_eq!(resp.status, 200, "{}", resp.text());

    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(node.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let stopping = receive(socket, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no STOPPING=1 after SIGTERM\n{}", log()));
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = node.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", log());
    assert_eq!(receive(socket, QUIET), None, "nothing after STOPPING=1");
}

#[test]
fn node_reports_ready_and_stopping_to_notify_socket() {
    // A path, as systemd gives it ...
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    check_notify(&socket, &path.to_string_lossy());

    // ... and an abstract-namespace address (`@name`).
    use std::os::linux::net::SocketAddrExt;
    let name = format!("weim-{}", unique_name("notify"));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    check_notify(&socket, &format!("@{name}"));
}

/// Cluster settings that pass every other check (the node stops at the
/// configuration, before it connects to anything).
const CLUSTER: &[(&str, &str)] = &[
    ("WEIM_HTTP_LISTEN", "127.0.0.1:0"),
    ("WEIM_CLUSTER_ENABLED", "true"),
    ("WEIM_CLUSTER_ETCD", "http://127.0.0.1:1"),
    ("WEIM_CLUSTER_REDIS", "redis://127.0.0.1:1/"),
    ("WEIM_AUTH_JWT_SECRET", "deploy-test"),
    ("WEIM_STORE_KIND", "mysql"),
    ("WEIM_STORE_MYSQL_URL", "mysql://root@127.0.0.1:1/weim"),
];

#[test]
fn cluster_refuses_local_attachments_unless_shared() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut node = spawn_weim(dir.path(), CLUSTER, &[]);
    let status = node.wait_exit(Duration::from_secs(10));
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    let line = log
        .lines()
        .find(|l| l.starts_with("weim: config: attach.kind:"))
        .unwrap_or_else(|| panic!("no attach.kind line:\n{log}"));
    assert!(
        line.contains("cluster")
            && line.contains("attach.kind: s3")
            && line.contains("attach.shared: true"),
        "{line}"
    );

    // Declared shared, the configuration passes (the node then fails on
    // the unreachable store, exit 1).
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut shared = CLUSTER.to_vec();
    shared.push(("WEIM_ATTACH_SHARED", "true"));
    let mut node = spawn_weim(dir.path(), &shared, &[]);
    let status = node.wait_exit(Duration::from_secs(20));
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(!log.contains("attach"), "{log}");
}

/// CPUs in this process's affinity mask (inherited by the nodes it starts).
fn allowed_cpus() -> usize {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        libc::CPU_COUNT(&set) as usize
    }
}

#[test]
fn more_reactors_than_cpus_is_one_warning() {
    let cpus = allowed_cpus();
    let started = |node: &Node| {
        assert!(
            wait_until(Duration::from_secs(5), || node
                .log()
                .contains("weim node on")),
            "{}",
            node.log()
        );
        node.log()
    };
    let node = Node::builder()
        .env("WEIM_NODE_REACTORS", &(cpus + 1).to_string())
        .start();
    let log = started(&node);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("exceeds the")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains(&format!(
            "node.reactors = {} exceeds the {cpus} CPUs",
            cpus + 1
        )),
        "{}",
        warnings[0]
    );
    drop(node);

    let node = Node::builder()
        .env("WEIM_NODE_REACTORS", &cpus.to_string())
        .start();
    let log = started(&node);
    assert!(!log.contains("exceeds the"), "{log}");
}
