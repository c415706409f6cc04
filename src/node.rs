//! One weim node: the state every thread shares, start-up wiring (store,
//! secret, listeners, reactors, workers, optional core pinning, the cluster
//! threads in cluster mode) and the drain on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use socket2::{Domain, Socket, Type};

use crate::auth::{self, Throttle, Tokens};
use crate::cluster::Cluster;
use crate::config::{Config, StoreKind};
use crate::delivery::{Delivery, Registry};
use crate::metrics::Metrics;
use crate::reactor::{self, Inbox, Reactor};
use crate::store::{self, Store};
use crate::worker::{self, Job};

/// What reactors and workers share.
pub struct Shared {
    /// The node's configuration.
    pub config: Config,
    /// Persistent state.
    pub store: Box<dyn Store>,
    /// Token issue and checks.
    pub tokens: Tokens,
    /// Failed-login throttle.
    pub throttle: Throttle,
    /// Pushes to connections.
    pub delivery: Delivery,
    /// Counters.
    pub metrics: Metrics,
    /// The bounded job queue into the workers.
    pub jobs: Sender<Job>,
    /// Set when the node starts draining.
    pub draining: AtomicBool,
    /// Jobs being handled right now.
    pub active_jobs: AtomicUsize,
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    reactors: Vec<JoinHandle<()>>,
    /// The address the node accepts on (port resolved when 0 was asked).
    pub addr: SocketAddr,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPUs this process may run on (its affinity mask, e.g. systemd's
/// `CPUAffinity`), in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..cores()).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to these CPUs.
pub fn pin_to(cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data; CPU_SET and sched_setaffinity only
    // read and write the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            log::warn!("could not pin thread to CPUs {cpus:?}");
        }
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

fn open_store(config: &Config) -> Result<Box<dyn Store>, String> {
    let s = &config.store;
    Ok(match s.kind {
        StoreKind::Sqlite => Box::new(
            store::open_sqlite(&s.sqlite_path, s.pool_size)
                .map_err(|e| format!("store {}: {e}", s.sqlite_path.display()))?,
        ),
        StoreKind::Mysql => Box::new(
            store::open_mysql(&s.mysql_url, s.pool_size)
                .map_err(|e| format!("store mysql: {e}"))?,
        ),
    })
}

impl Node {
    /// Opens the store, binds the port and starts every thread.
    pub fn start(config: Config) -> Result<Node, String> {
        let reactors = match config.node.reactors {
            0 => cores(),
            n => n,
        };
        let workers = match config.node.workers {
            0 => (2 * cores()).max(4),
            n => n,
        };
        let secret =
            auth::load_or_create_secret(config.auth.jwt_secret.as_deref(), &config.node.data_dir)?;
        let store = open_store(&config)?;
        let tokens = Tokens::new(secret.as_bytes(), config.auth.token_ttl);
        let revoked = store
            .revoked_tokens(auth::now_secs())
            .map_err(|e| format!("store: {e}"))?;
        for (sig, exp) in revoked {
            tokens.revoke(&sig, exp);
        }

        let first = listener(config.http.listen)
            .map_err(|e| format!("http.listen {}: {e}", config.http.listen))?;
        let addr = first.local_addr().map_err(|e| e.to_string())?;
        let mut listeners = vec![first];
        for _ in 1..reactors {
            listeners.push(listener(addr).map_err(|e| format!("http.listen {addr}: {e}"))?);
        }

        let mut handles = Vec::with_capacity(reactors);
        let mut parts = Vec::with_capacity(reactors);
        for _ in 0..reactors {
            let (handle, p) = reactor::prepare().map_err(|e| format!("reactor: {e}"))?;
            handles.push(handle);
            parts.push(p);
        }
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(config.node.job_queue);
        let cluster = match config.cluster.enabled {
            true => Some(Cluster::new(&config, addr, workers)?),
            false => None,
        };
        let mut registry = Registry::new(config.limits.conns_per_user);
        if let Some(c) = &cluster {
            registry = registry.with_presence(c.notifier());
        }
        let shared = Arc::new(Shared {
            throttle: Throttle::new(
                config.auth.login_fail_limit_user,
                config.auth.login_fail_limit_ip,
                config.auth.login_fail_window,
            ),
            delivery: Delivery::new(registry, handles).with_cluster(cluster.clone()),
            metrics: Metrics::new(reactors),
            jobs: jobs_tx,
            draining: AtomicBool::new(false),
            active_jobs: AtomicUsize::new(0),
            tokens,
            store,
            config,
        });

        let cpus = allowed_cpus();
        let pin = shared.config.node.pin_cores && !cpus.is_empty();
        let mut threads = Vec::with_capacity(reactors);
        for (i, (p, l)) in parts.into_iter().zip(listeners).enumerate() {
            let r = Reactor::new(i as u16, p, l, shared.clone())
                .map_err(|e| format!("reactor: {e}"))?;
            let core = cpus.get(i % cpus.len().max(1)).copied();
            let t = std::thread::Builder::new()
                .name(format!("weim-reactor-{i}"))
                .spawn(move || {
                    if let Some(core) = core.filter(|_| pin) {
                        pin_to(&[core]);
                    }
                    r.run()
                })
                .map_err(|e| e.to_string())?;
            threads.push(t);
        }
        let spare: Vec<usize> = cpus.iter().skip(reactors).copied().collect();
        let worker_cpus = (pin && !spare.is_empty()).then_some(spare);
        worker::spawn(workers, jobs_rx, shared.clone(), worker_cpus).map_err(|e| e.to_string())?;
        if let Some(c) = &cluster {
            c.start(&shared)?;
        }
        log::info!(
            "weim node on {addr}: {reactors} reactors, {workers} workers, {:?} store",
            shared.config.store.kind
        );
        Ok(Node {
            shared,
            reactors: threads,
            addr,
        })
    }

    /// Stops accepting, closes WebSockets with 1001, finishes queued jobs
    /// (waiting at most `limit`), leaves the cluster (lease revoked,
    /// presence cleared, at most 2 s more) and stops the reactors.
    pub fn drain(self, limit: Duration) {
        let deadline = Instant::now() + limit;
        self.shared.draining.store(true, Relaxed);
        for h in self.shared.delivery.reactors() {
            h.send(Inbox::Drain);
        }
        // Give close frames a moment to leave, then wait for the jobs.
        std::thread::sleep(Duration::from_millis(100));
        while Instant::now() < deadline
            && (!self.shared.jobs.is_empty() || self.shared.active_jobs.load(Relaxed) > 0)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(c) = self.shared.delivery.cluster() {
            c.leave(Duration::from_secs(2));
        }
        // Let the last answers be written.
        std::thread::sleep(Duration::from_millis(50));
        for h in self.shared.delivery.reactors() {
            h.send(Inbox::Stop);
        }
        for t in self.reactors {
            let _ = t.join();
        }
    }
}
