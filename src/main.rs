//! The `weim` binary: reads the configuration, starts one node, prints
//! `weim: listening on ADDR` once it accepts, and drains on SIGTERM/SIGINT.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use weim::config::Config;
use weim::node::Node;

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

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is a valid, initialised signal set and `sig` is ours.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
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
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "weim: listening on {}", node.addr);
    let _ = out.flush();
    let sig = wait_for_signal(&signals);
    log::info!("signal {sig}: draining");
    node.drain(Duration::from_secs(8));
    log::info!("stopped");
    std::process::exit(0);
}
