//! One weim node: the state every thread shares, start-up wiring (store,
//! secret, listeners, reactors, workers, optional core pinning, the cluster
//! threads in cluster mode, the webhook sender, each under `supervise`) and
//! the drain on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use socket2::{Domain, Socket, Type};

use crate::access::Access;
use crate::attach::{Attachments, Local, S3Config, S3};
use crate::auth::{self, AddrThrottle, Throttle, Tokens};
use crate::cluster::Cluster;
use crate::commit::{self, Committer};
use crate::config::{AttachKind, Config, SearchKind, StoreKind};
use crate::delivery::{Delivery, Registry};
use crate::metrics::Metrics;
use crate::reactor::{self, Inbox, Reactor};
use crate::search::{Elasticsearch, RedisGeo, Search, SqlSearch};
use crate::store::{self, Store};
use crate::supervise::{self, Role};
use crate::webhook::Webhook;
use crate::worker::{self, Job};

/// What reactors and workers share.
pub struct Shared {
    /// The node's configuration.
    pub config: Config,
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Where uploaded files go.
    pub attach: Box<dyn Attachments>,
    /// User, group and nearby search.
    pub search: Box<dyn Search>,
    /// Key of the national ID numbers' keyed hash (see `idcard::hash_key`).
    pub id_hash_key: Vec<u8>,
    /// Token issue and checks.
    pub tokens: Tokens,
    /// Whether a token's user exists and is not disabled (cached).
    pub access: Access,
    /// Failed-login throttle.
    pub throttle: Throttle,
    /// Pushes to connections.
    pub delivery: Delivery,
    /// Counters.
    pub metrics: Metrics,
    /// The bounded job queue into the workers.
    pub jobs: Sender<Job>,
    /// Group commit of chat messages.
    pub committer: Committer,
    /// Events for the operator's backend, when `webhook.url` is set.
    pub webhook: Option<Arc<Webhook>>,
    /// Wrong `Api-Key`s per address (the server API).
    pub api_key_throttle: AddrThrottle,
    /// Set when the node starts draining.
    pub draining: AtomicBool,
    /// Jobs being handled right now.
    pub active_jobs: AtomicUsize,
    /// Why the node failed, once a thread that cannot be restarted panicked.
    failed: OnceLock<String>,
}

impl Shared {
    /// Marks the node failed (the first reason is kept): `/healthz`
    /// answers 503 and the main thread ends the process.
    pub fn fail(&self, why: String) {
        let _ = self.failed.set(why);
    }

    /// Why the node failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }
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

fn open_store(config: &Config) -> Result<Arc<dyn Store>, String> {
    let s = &config.store;
    Ok(match s.kind {
        StoreKind::Sqlite => Arc::new(
            store::open_sqlite(&s.sqlite_path, s.pool_size)
                .map_err(|e| format!("store {}: {e}", s.sqlite_path.display()))?,
        ),
        StoreKind::Mysql => Arc::new(
            store::open_mysql(&s.mysql_url, s.pool_size)
                .map_err(|e| format!("store mysql: {e}"))?,
        ),
    })
}

fn open_attach(config: &Config) -> Result<Box<dyn Attachments>, String> {
    let a = &config.attach;
    Ok(match a.kind {
        AttachKind::Local => {
            Box::new(Local::open(a.dir.clone(), &a.url_prefix).map_err(|e| e.to_string())?)
        }
        AttachKind::S3 => Box::new(
            S3::new(S3Config {
                endpoint: a.s3_endpoint.clone(),
                bucket: a.s3_bucket.clone(),
                region: a.s3_region.clone(),
                access_key: a.s3_access_key.clone(),
                secret_key: a.s3_secret_key.clone(),
                public_url: a.s3_public_url.clone(),
            })
            .map_err(|e| e.to_string())?,
        ),
    })
}

fn open_search(config: &Config, store: Arc<dyn Store>) -> Result<Box<dyn Search>, String> {
    let s = &config.search;
    let engine: Box<dyn Search> = match s.kind {
        SearchKind::Sql => Box::new(SqlSearch::new(store)),
        SearchKind::Elasticsearch => {
            let es = Elasticsearch::new(&s.url, &s.users_index, &s.groups_index)
                .map_err(|e| e.to_string())?;
            // Not fatal: the indexes are created as soon as the engine answers
            // on a later start; searches fail (503) meanwhile.
            if let Err(e) = es.ensure_indexes() {
                log::warn!("{e}");
            }
            Box::new(es)
        }
    };
    if config.geo.redis.is_empty() {
        return Ok(engine);
    }
    let geo = RedisGeo::new(engine, &config.geo.redis, &config.geo.redis_prefix)
        .map_err(|e| format!("geo.redis: {e}"))?;
    Ok(Box::new(geo))
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
        let attach = open_attach(&config)?;
        let search = open_search(&config, Arc::clone(&store))?;
        let id_hash_key = crate::idcard::hash_key(config.auth.id_hash_key.as_deref(), &secret);
        let tokens = Tokens::new(
            secret.as_bytes(),
            config.auth.token_ttl,
            config.auth.session_ttl,
        );
        tokens
            .load_revoked(store.as_ref())
            .map_err(|e| format!("store: {e}"))?;
        let access = Access::new(config.auth.user_cache_ttl, config.auth.user_cache_size);

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
        let webhook = Webhook::new(&config.webhook);
        let mut registry = Registry::new(config.limits.conns_per_user);
        match (&cluster, &webhook) {
            // A user's first and last connection in the cluster are known
            // to the presence thread, which tells the webhook.
            (Some(c), _) => registry = registry.with_presence(c.notifier()),
            (None, Some(w)) if w.wants_presence() => registry = registry.with_webhook(w.clone()),
            (None, _) => {}
        }
        let (committer, submissions) = Committer::new(config.chat.commit_queue);
        let shared = Arc::new(Shared {
            throttle: Throttle::new(
                config.auth.login_fail_limit_user,
                config.auth.login_fail_limit_ip,
                config.auth.login_fail_window,
            ),
            delivery: Delivery::new(registry, handles).with_cluster(cluster.clone()),
            metrics: Metrics::new(reactors),
            jobs: jobs_tx,
            committer,
            webhook,
            api_key_throttle: AddrThrottle::new(
                config.auth.login_fail_limit_ip,
                config.auth.login_fail_window,
            ),
            draining: AtomicBool::new(false),
            active_jobs: AtomicUsize::new(0),
            failed: OnceLock::new(),
            tokens,
            access,
            store,
            attach,
            search,
            id_hash_key,
            config,
        });

        let cpus = allowed_cpus();
        let pin = shared.config.node.pin_cores && !cpus.is_empty();
        let mut threads = Vec::with_capacity(reactors);
        for (i, (p, l)) in parts.into_iter().zip(listeners).enumerate() {
            let r = Reactor::new(i as u16, p, l, shared.clone())
                .map_err(|e| format!("reactor: {e}"))?;
            let core = cpus.get(i % cpus.len().max(1)).copied();
            // A reactor's connections die with it: its panic fails the node.
            let t = supervise::critical(
                &shared,
                Role::Reactor,
                format!("weim-reactor-{i}"),
                move || {
                    if let Some(core) = core.filter(|_| pin) {
                        pin_to(&[core]);
                    }
                    r.run()
                },
            )
            .map_err(|e| e.to_string())?;
            threads.push(t);
        }
        let spare: Vec<usize> = cpus.iter().skip(reactors).copied().collect();
        let worker_cpus = (pin && !spare.is_empty()).then_some(spare);
        worker::spawn(workers, jobs_rx, shared.clone(), worker_cpus).map_err(|e| e.to_string())?;
        commit::spawn(submissions, shared.clone()).map_err(|e| e.to_string())?;
        if let Some(w) = shared.webhook.clone() {
            let s = shared.clone();
            supervise::restarting(&shared, Role::Webhook, "weim-webhook".into(), move || {
                w.run(&s)
            })
            .map_err(|e| format!("webhook: {e}"))?;
        }
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

    /// Why the node failed (see `supervise`), if it did.
    pub fn failure(&self) -> Option<&str> {
        self.shared.failure()
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
            && (!self.shared.jobs.is_empty()
                || self.shared.active_jobs.load(Relaxed) > 0
                || !self.shared.committer.is_idle())
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
