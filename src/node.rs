//! One weim node: the state every thread shares, start-up wiring
//! (listeners, store, secret, reactors, workers, optional core pinning, the
//! cluster threads in cluster mode, the webhook sender, each under
//! `supervise`) and the drain on shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::access::Access;
use crate::attach::{Attachments, Local, S3Config, S3};
use crate::auth::{self, Tokens};
use crate::budget::BodyBudget;
use crate::cluster::Cluster;
use crate::commit::{self, Committer};
use crate::config::{AttachKind, Config, SearchKind, StoreKind};
use crate::delivery::{Delivery, Registry};
use crate::http::Request;
use crate::listen;
use crate::metrics::Metrics;
use crate::proxy;
use crate::rate::SendRate;
use crate::reactor::{self, Inbox, PerAddress, Reactor};
use crate::search::{Elasticsearch, RedisGeo, Search, SqlSearch};
use crate::store::{self, Store};
use crate::supervise::{self, Role};
use crate::throttle::Throttle;
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
    /// Whether a token's user exists and is not banned (cached).
    pub access: Access,
    /// Throttles of logins, registrations, `Admin-Token`s and `Api-Key`s.
    pub throttle: Throttle,
    /// Pushes to connections.
    pub delivery: Delivery,
    /// Counters.
    pub metrics: Metrics,
    /// The bounded job queue into the workers.
    pub jobs: Sender<Job>,
    /// Group commit of chat messages.
    pub committer: Committer,
    /// The per-user send limit (`limits.send_rate`).
    pub send_rate: SendRate,
    /// Connections per client address (`limits.conns_per_ip`).
    pub per_ip: PerAddress,
    /// Events for the operator's backend, when `webhook.url` is set.
    pub webhook: Option<Arc<Webhook>>,
    /// Set when the node starts draining.
    pub draining: AtomicBool,
    /// Jobs being handled right now.
    pub active_jobs: AtomicUsize,
    /// Request body bytes in flight (`limits.max_inflight_body`).
    pub bodies: BodyBudget,
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

    /// The client address of a request, the one every per-address limit
    /// counts: its TCP peer, or behind a trusted proxy the address
    /// `X-Forwarded-For` names (see `proxy`).
    pub fn client_addr(&self, req: &Request) -> IpAddr {
        let forwarded = req
            .headers
            .iter()
            .filter(|(name, _)| name == "x-forwarded-for")
            .map(|(_, value)| value.as_str());
        proxy::client_addr(&self.config.http.trusted_proxies, req.peer, forwarded)
    }

    /// Whether `ip` (a TCP peer) is one of `http.trusted_proxies`: a
    /// proxy's connections carry many clients and are not limited as one.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        proxy::is_trusted(&self.config.http.trusted_proxies, ip)
    }
}

/// Why a node did not start.
#[derive(Debug)]
pub enum StartError {
    /// `http.listen` cannot be used: taken by another process (exit 2).
    Listen(String),
    /// Anything else (exit 1).
    Failed(String),
}

impl From<String> for StartError {
    fn from(e: String) -> Self {
        StartError::Failed(e)
    }
}

impl StartError {
    /// The process's exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Listen(_) => 2,
            StartError::Failed(_) => 1,
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Listen(e) | StartError::Failed(e) => f.write_str(e),
        }
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

pub(crate) fn open_store(config: &Config) -> Result<Arc<dyn Store>, String> {
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

pub(crate) fn open_search(
    config: &Config,
    store: Arc<dyn Store>,
) -> Result<Box<dyn Search>, String> {
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
    /// Binds the port (first: a node refuses an address another process
    /// listens on before touching its store), opens the store and starts
    /// every thread.
    pub fn start(config: Config) -> Result<Node, StartError> {
        let reactors = match config.node.reactors {
            0 => cores(),
            n => n,
        };
        let workers = match config.node.workers {
            0 => (2 * cores()).max(4),
            n => n,
        };
        let listeners = listen::bind(config.http.listen, reactors).map_err(StartError::Listen)?;
        let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
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
            throttle: Throttle::new(&config),
            delivery: Delivery::new(registry, handles).with_cluster(cluster.clone()),
            metrics: Metrics::new(reactors),
            jobs: jobs_tx,
            committer,
            send_rate: SendRate::new(config.limits.send_rate, config.limits.send_burst),
            per_ip: PerAddress::new(config.limits.conns_per_ip, &config.http.trusted_proxies),
            webhook,
            draining: AtomicBool::new(false),
            active_jobs: AtomicUsize::new(0),
            bodies: BodyBudget::new(config.limits.max_inflight_body, config.limits.max_body),
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
        if reactors > cpus.len() {
            log::warn!(
                "node.reactors = {reactors} exceeds the {} CPUs this process may run on \
                 (its affinity mask {cpus:?}): reactors share CPUs",
                cpus.len()
            );
        }
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
