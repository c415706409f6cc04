//! `weim-load`: the load generator of the weim gateway benchmarks.
//!
//! `weim-load <idle|broadcast|slow|chat|group|soak> [options]` runs one scenario
//! against one node on loopback: it re-executes itself as `--child` processes
//! that hold the connections (at most 19,000 each), paces the broadcast
//! rounds or starts the chat, prints a table and optionally writes the full
//! result as JSON.

mod chat;
mod child;
mod hist;
mod host;
mod http;
mod opts;
mod parent;
mod proto;
mod report;
mod soak;
mod token;
mod ws;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        std::process::exit(child::main());
    }
    let opts = match opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if e.is_empty() {
                print!("{}", opts::USAGE);
                std::process::exit(0);
            }
            eprintln!("weim-load: {e}\n\n{}", opts::USAGE);
            std::process::exit(2);
        }
    };
    let json = opts.json.clone();
    let summary = parent::run(opts);
    print!("{}", summary.table());
    if let Some(path) = json {
        let text = match serde_json::to_string_pretty(&summary) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("weim-load: JSON: {e}");
                std::process::exit(1);
            }
        };
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("weim-load: {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    // Failing to open or sign in connections is a result, not a crash; exit
    // 0 when the run produced a report, 3 when nothing was signed in.
    if summary.conns.signed_in == 0 {
        std::process::exit(3);
    }
}
