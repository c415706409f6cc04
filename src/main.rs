//! The `weim` binary: reads the configuration, starts one node, prints
//! `weim: listening on ADDR` once it accepts, and drains on SIGTERM/SIGINT
//! (exit 0). A failed node (see `weim::supervise`) drains too and exits
//! with `FAILED_EXIT` (70) so that the service manager starts it again.
//! It exits with 2 when the configuration is invalid or `http.listen` is
//! taken (another process listens there), with 1 when the node cannot
//! start for another reason (its store, say).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use weim::config::Config;
use weim::node::Node;
use weim::supervise::FAILED_EXIT;

/// How long queued work may take to finish on drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(8);
/// How often the main thread looks for a failed node between signals.
const FAILURE_POLL: Duration = Duration::from_millis(100);
/// How long a failed node answers 503 on `/healthz` before it drains, so
/// health checks see it fail before its connections close.
const FAILED_GRACE: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: weim [--config PATH]   (default ./config.yml; WEIM_<SECTION>_<KEY> variables override keys)";

/// The path given with `--config`, and whether it was given.
fn config_path() -> Result<(PathBuf, bool), String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => path = Some(args.next().ok_or(USAGE)?),
            a if a.starts_with("--config=") => path = Some(a["--config=".len()..].to_string()),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(match path {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from("config.yml"), false),
    })
}

/// Blocks SIGTERM and SIGINT in this thread (and every thread it starts);
/// `wait_for_signal` then takes them synchronously.
fn block_signals() -> libc::sigset_t {
    // SAFETY: the set is plain data owned here; these calls only read it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// A blocked signal taken within `timeout`, if one came.
fn wait_for_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid, initialised signal set, `ts` is ours and a
    // null info pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (path, explicit) = match config_path() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weim: {e}");
            std::process::exit(2);
        }
    };
    let file = (explicit || path.exists()).then_some(path.as_path());
    let config = match Config::load(file, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weim: config: {e}");
            std::process::exit(2);
        }
    };
    let signals = block_signals();
    let node = match Node::start(config) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("weim: {e}");
            std::process::exit(e.exit_code());
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "weim: listening on {}", node.addr);
    let _ = out.flush();
    loop {
        if let Some(sig) = wait_for_signal(&signals, FAILURE_POLL) {
            log::info!("signal {sig}: draining");
            node.drain(DRAIN_LIMIT);
            log::info!("stopped");
            std::process::exit(0);
        }
        if let Some(why) = node.failure() {
            log::error!(
                "node failed ({why}): draining in {FAILED_GRACE:?}, then exiting with {FAILED_EXIT}"
            );
            std::thread::sleep(FAILED_GRACE);
            // A failed node may be in any state: the drain gets its limit
            // and a little more, then the process ends regardless.
            std::thread::spawn(|| {
                std::thread::sleep(DRAIN_LIMIT + Duration::from_secs(2));
                std::process::exit(FAILED_EXIT);
            });
            node.drain(DRAIN_LIMIT);
            log::info!("stopped");
            std::process::exit(FAILED_EXIT);
        }
    }
}
