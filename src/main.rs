//! The `weim` binary: reads the configuration, starts one node, prints
//! `weim: listening on ADDR` once it accepts (and tells the service
//! manager `READY=1`, see `weim::notify`), and drains on SIGTERM/SIGINT
//! (`STOPPING=1`, exit 0). It exits with 2 when the configuration is
//! invalid or `http.listen` is taken (another process listens there), with
//! 1 when the node cannot start for another reason (its store, say). A
//! failed node (see `weim::supervise`) drains too and exits with
//! `FAILED_EXIT` (70) so that the service manager starts it again.
//!
//! `weim migrate --from mysql://…` instead imports a weIm-go database into
//! the configured store (see `weim::migrate`), prints the counts per table
//! and exits: 0 when done, 1 when it stopped (what was stored stays; run it
//! again to go on).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use weim::config::Config;
use weim::migrate;
use weim::node::Node;
use weim::notify::Notifier;
use weim::supervise::FAILED_EXIT;

/// How long queued work may take to finish on drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(8);
/// How often the main thread looks for a failed node between signals.
const FAILURE_POLL: Duration = Duration::from_millis(100);
/// How long a failed node answers 503 on `/healthz` before it drains, so
/// health checks see it fail before its connections close.
const FAILED_GRACE: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: weim [--config PATH]
       weim migrate --from mysql://USER:PASSWORD@HOST:PORT/DATABASE [--into-nonempty] [--config PATH]
(default config ./config.yml; WEIM_<SECTION>_<KEY> variables override keys)";

/// What the command line asks for.
enum Command {
    /// Run a node.
    Serve,
    /// Import a weIm-go database into the configured store.
    Migrate(migrate::Options),
}

/// The command, the path given with `--config` and whether it was given.
fn parse_args() -> Result<(Command, PathBuf, bool), String> {
    let mut args = std::env::args().skip(1).peekable();
    let migrating = args.peek().is_some_and(|a| a == "migrate");
    if migrating {
        args.next();
    }
    let mut path = None;
    let mut from = None;
    let mut into_nonempty = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => path = Some(args.next().ok_or(USAGE)?),
            a if a.starts_with("--config=") => path = Some(a["--config=".len()..].to_string()),
            "--from" if migrating => from = Some(args.next().ok_or(USAGE)?),
            a if migrating && a.starts_with("--from=") => from = Some(a["--from=".len()..].into()),
            "--into-nonempty" if migrating => into_nonempty = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let command = if migrating {
        let from = from.ok_or_else(|| format!("migrate: --from is required\n{USAGE}"))?;
        Command::Migrate(migrate::Options {
            from,
            into_nonempty,
        })
    } else {
        Command::Serve
    };
    Ok(match path {
        Some(p) => (command, PathBuf::from(p), true),
        None => (command, PathBuf::from("config.yml"), false),
    })
}

/// Runs `weim migrate` and exits.
fn run_migrate(config: &Config, options: &migrate::Options) -> ! {
    match migrate::run(config, options) {
        Ok(report) => {
            let mut out = std::io::stdout();
            let _ = report.write(&mut out);
            let _ = writeln!(out, "weim migrate: done");
            let _ = out.flush();
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("weim migrate: {e}");
            std::process::exit(1);
        }
    }
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
    let (command, path, explicit) = match parse_args() {
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
    if let Command::Migrate(options) = &command {
        run_migrate(&config, options);
    }
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
    let notifier = Notifier::from_env();
    let notify = |state: &str| {
        if let Some(n) = &notifier {
            n.send(state);
        }
    };
    notify(&format!("READY=1\nSTATUS=listening on {}", node.addr));
    loop {
        if let Some(sig) = wait_for_signal(&signals, FAILURE_POLL) {
            log::info!("signal {sig}: draining");
            notify("STOPPING=1\nSTATUS=draining");
            node.drain(DRAIN_LIMIT);
            log::info!("stopped");
            std::process::exit(0);
        }
        if let Some(why) = node.failure() {
            log::error!(
                "node failed ({why}): draining in {FAILED_GRACE:?}, then exiting with {FAILED_EXIT}"
            );
            notify(&format!(
                "STOPPING=1\nSTATUS=failed: {}",
                why.replace('\n', " ")
            ));
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
