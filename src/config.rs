//! Node configuration for weim: the [`Config`] structure, its defaults, loading it
//! from a YAML file plus `WEIM_<SECTION>_<KEY>` environment overrides, and
//! validating the merged result.
//!
//! Every setting is described once, in the `KEYS` table. The YAML reader and the
//! environment reader both turn their input into the same textual form and hand it
//! to the same per-type parser, so a value means the same thing wherever it comes
//! from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::fault::{self, Fault};
use crate::proxy::Cidr;

/// Whole node configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// HTTP / WebSocket listener and REST settings.
    pub http: Http,
    /// Threads and local storage of this node.
    pub node: Node,
    /// Authentication and login throttling.
    pub auth: Auth,
    /// Persistent store backend.
    pub store: Store,
    /// Per-request and per-connection limits.
    pub limits: Limits,
    /// Multi-node operation (etcd membership, Redis routing).
    pub cluster: Cluster,
    /// Where uploaded files are kept.
    pub attach: Attach,
    /// Nearby people.
    pub geo: Geo,
    /// User, group and nearby search.
    pub search: Search,
    /// Chat message rules.
    pub chat: Chat,
    /// Users as answered.
    pub user: User,
    /// WebSocket test aids.
    pub ws: Ws,
    /// Events posted to the operator's backend.
    pub webhook: Webhook,
    /// Test-only fault injection, from `WEIM_FAULT` (not a configuration
    /// key; see `fault`).
    pub fault: Option<Fault>,
}

/// Section `user`: how users are answered.
#[derive(Debug, Clone)]
pub struct User {
    /// Avatar answered for a user without one (a URL, or a path on this
    /// gateway made absolute like uploads); default
    /// `/public/avatar/default.png`, a picture the gateway serves itself;
    /// empty = answered empty.
    pub default_avatar: String,
}

impl Default for User {
    fn default() -> Self {
        User {
            default_avatar: DEFAULT_AVATAR_PATH.to_string(),
        }
    }
}

/// Section `ws`: WebSocket test aids, off by default.
#[derive(Debug, Clone, Default)]
pub struct Ws {
    /// Path of the echo endpoint: a WebSocket there needs no sign-in and
    /// echoes each message (conformance suites drive it); empty = off.
    /// Never on in production.
    pub echo_path: String,
}

/// Shortest accepted `http.admin_token`, in characters.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// Where the gateway serves its built-in default avatar.
pub const DEFAULT_AVATAR_PATH: &str = "/public/avatar/default.png";

/// Section `chat`: rules for chat messages.
#[derive(Debug, Clone)]
pub struct Chat {
    /// Longest message body in characters; default 4096.
    pub max_body_chars: usize,
    /// How long after sending a message may be withdrawn; default 2 m.
    pub withdraw_window: Duration,
    /// Messages that may wait to be stored; a full queue slows senders
    /// down (their sockets are not read); default 16384.
    pub commit_queue: usize,
}

impl Default for Chat {
    fn default() -> Self {
        Chat {
            max_body_chars: 4096,
            withdraw_window: Duration::from_secs(120),
            commit_queue: 16 * 1024,
        }
    }
}

/// Section `http`: the listener shared by REST and WebSocket traffic.
#[derive(Debug, Clone)]
pub struct Http {
    /// Address to listen on; default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Bearer token for the admin routes, at least [`MIN_ADMIN_TOKEN`]
    /// characters; `None` (empty in the file) turns them off.
    pub admin_token: Option<String>,
    /// Wrong `Admin-Token`s from one address before each further try from
    /// it waits (see `throttle`); default 10.
    pub admin_fail_limit: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client address
    /// (see `proxy`); default none.
    pub trusted_proxies: Vec<Cidr>,
    /// Origins allowed by CORS; default `["*"]`.
    pub cors_origins: Vec<String>,
    /// Scheme and host clients reach the gateway at (`https://im.example.com`),
    /// put before the gateway's own paths in answered URLs; empty = from each
    /// request's `Host` (`http://<Host>`). No trailing `/` after loading.
    pub public_url: String,
    /// Keys of the server API (`/server/v1/*`, header `Api-Key`), each at
    /// least [`MIN_API_KEY_LEN`] characters; empty turns the API off.
    pub server_api_keys: Vec<String>,
    /// Serve the web app (`/`), the operator's page (`/admin`) and the
    /// JavaScript SDK (`/sdk/weim.js`) from the binary; default true.
    pub web: bool,
}

/// Shortest accepted `http.server_api_keys` entry.
pub const MIN_API_KEY_LEN: usize = 16;

/// Every webhook event type, as named in `webhook.events` and in the events.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "message.offline",
    "user.online",
    "user.offline",
    "friend.added",
    "group.member_joined",
    "group.member_left",
];

/// Section `webhook`: events the node posts to the operator's backend.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where events are posted (`http://` or `https://`); empty = off.
    pub url: String,
    /// Key of the `Weim-Signature` HMAC-SHA256; required with `url`.
    pub secret: String,
    /// Event types posted (names of [`WEBHOOK_EVENTS`]); empty = all.
    pub events: Vec<String>,
    /// Events waiting to be posted at most; past it the oldest are dropped.
    pub queue: usize,
    /// Retries of an event after its first attempt failed.
    pub max_retries: u32,
    /// How long one post may take.
    pub timeout: Duration,
}

impl Default for Webhook {
    fn default() -> Self {
        Webhook {
            url: String::new(),
            secret: String::new(),
            events: WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect(),
            queue: 10_000,
            max_retries: 8,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Section `node`: threads and local files of this process.
#[derive(Debug, Clone)]
pub struct Node {
    /// Number of mio reactor threads; 0 = one per core (resolved by the caller).
    pub reactors: usize,
    /// Number of worker threads; 0 = automatic.
    pub workers: usize,
    /// Pin reactor threads to cores; default false.
    pub pin_cores: bool,
    /// Directory for local state (SQLite database, generated JWT secret); default `./data`.
    pub data_dir: PathBuf,
    /// Maximum number of queued REST jobs; at least 1, default 4096.
    pub job_queue: usize,
}

/// Section `auth`: tokens and login throttling.
#[derive(Debug, Clone)]
pub struct Auth {
    /// HMAC secret for JWTs; `None` (empty in the file) lets a single node generate one.
    pub jwt_secret: Option<String>,
    /// Lifetime of issued tokens; default 7 days.
    pub token_ttl: Duration,
    /// Absolute lifetime of a session (from its login): no token of the
    /// session, refreshed or not, is valid after it; default 30 days.
    pub session_ttl: Duration,
    /// How long a node trusts its last look-up of whether a user exists
    /// and is not disabled; `0` looks up every time; default 10 s.
    pub user_cache_ttl: Duration,
    /// Users whose look-up a node keeps at most; at least 64, default 100,000.
    pub user_cache_size: usize,
    /// Time a new WebSocket connection has to authenticate; default 15 s.
    pub auth_timeout: Duration,
    /// Failed logins of one account (from any addresses) before the
    /// addresses that failed on it wait (see `throttle`); default 5.
    pub login_fail_limit_user: u32,
    /// Failed logins from one address before it waits; default 20.
    pub login_fail_limit_ip: u32,
    /// Failures (logins, `Admin-Token`) are forgotten once this long has
    /// passed without one; default 15 minutes.
    pub login_fail_window: Duration,
    /// The first wait past a failure limit, doubled at each further
    /// failure; default 1 s.
    pub fail_delay: Duration,
    /// The longest wait; default 15 minutes.
    pub fail_delay_max: Duration,
    /// Registrations from one address per `register_window`; 0 = no
    /// limit; default 20.
    pub register_limit_ip: u32,
    /// Window of `register_limit_ip`, from an address's first
    /// registration; default 1 hour.
    pub register_window: Duration,
    /// Most keys (addresses, accounts) each throttle remembers; at least
    /// 100, default 100,000.
    pub throttle_entries: usize,
    /// Key of the HMAC that detects a national ID used by two accounts;
    /// `None` derives one from the JWT secret.
    pub id_hash_key: Option<String>,
}

/// Which database backend stores users, messages and sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// Embedded SQLite file (single node).
    #[default]
    Sqlite,
    /// MySQL server (shareable by several nodes).
    Mysql,
}

/// Section `store`: the persistent store.
#[derive(Debug, Clone)]
pub struct Store {
    /// Backend; default sqlite.
    pub kind: StoreKind,
    /// SQLite database file. Empty means `<data_dir>/weim.db`; [`Config::load`]
    /// resolves it, so after loading it is never empty.
    pub sqlite_path: PathBuf,
    /// MySQL URL (`mysql://user:pass@host:3306/db`); required when `kind` is mysql.
    pub mysql_url: String,
    /// Connection pool size; 0 = automatic.
    pub pool_size: usize,
}

/// Section `limits`: sizes and timeouts protecting the node.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum HTTP request body in bytes; default 1 MiB, at least 1024.
    pub max_body: usize,
    /// Maximum body of the upload routes (chat files, avatars); default 20 MiB.
    pub max_upload: usize,
    /// Maximum WebSocket message in bytes; default 64 KiB, at least 126.
    pub max_message: usize,
    /// Maximum bytes queued for sending per connection; default 256 KiB.
    pub max_pending_bytes: usize,
    /// Maximum simultaneous WebSocket connections per user; default 0 =
    /// unlimited, as the old server.
    pub conns_per_user: usize,
    /// A signed-in connection silent for this long gets a WebSocket ping;
    /// default 30 s; 0 = no pings.
    pub ping_interval: Duration,
    /// A connection still silent this long after its ping (or after its last
    /// frame, without pings) is closed; default 120 s.
    pub idle_timeout: Duration,
    /// A partial HTTP request head older than this is closed, and so is a
    /// request body that received nothing for this long; default 30 s.
    pub http_timeout: Duration,
    /// Request body bytes the node holds at once (bodies being received
    /// or handled, reserved from their `Content-Length`); a request that
    /// would pass it is answered 503; default 256 MiB, at least
    /// `max_upload` and `max_body`.
    pub max_inflight_body: usize,
    /// Slowest average rate of a request body, bytes per second, after a
    /// grace of `http_timeout`; a slower one is answered 408 and closed;
    /// default 1 KiB/s; 0 = only `http_timeout` without progress applies.
    pub min_body_rate: usize,
    /// Maximum connections on this node; 0 = unlimited.
    pub max_connections: usize,
    /// Maximum connections from one address (an IPv6 client by its /64);
    /// default 1000; 0 = unlimited.
    pub conns_per_ip: usize,
    /// Maximum connections on this node that are not signed in (HTTP, and
    /// WebSockets before Cmd 3); default 10,000; 0 = unlimited.
    pub max_unauthenticated: usize,
    /// WebSocket messages (counted at their final frame) and control
    /// frames a connection may send per second (refilled continuously);
    /// default 200; 0 = unlimited.
    pub cmd_rate: u32,
    /// Messages a connection may send at once before `cmd_rate` applies;
    /// default 1000.
    pub cmd_burst: u32,
    /// Chat recipients a user's sends may reach per second on this node,
    /// over all their connections and REST (a friend message costs 1, a
    /// group message its member count less the sender); default 1000;
    /// 0 = unlimited.
    pub send_rate: u32,
    /// Recipients a user's sends may reach at once before `send_rate`
    /// applies; default 10,000.
    pub send_burst: u32,
    /// A connection over its rate limits this long without a pause of a
    /// second is closed (1008); default 10 s; 0 = never.
    pub flood_close: Duration,
}

/// Section `cluster`: running several weim nodes together.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Join a cluster; default false (single node).
    pub enabled: bool,
    /// Unique name of this node within the cluster; default empty.
    pub node_id: String,
    /// Address other nodes use to reach this one (`host:port`); default empty.
    pub advertise: String,
    /// etcd endpoints for membership; required when `enabled`.
    pub etcd: Vec<String>,
    /// Redis URL for cross-node routing; required when `enabled`.
    pub redis: String,
    /// Lease lifetime of this node's registration in etcd; default 10 s.
    pub lease_ttl: Duration,
}

/// Where attachments are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachKind {
    /// A local directory served back by the gateway.
    #[default]
    Local,
    /// An S3-compatible object store (AWS S3, MinIO, Qiniu Kodo...).
    S3,
}

/// Section `attach`: uploaded files.
#[derive(Debug, Clone)]
pub struct Attach {
    /// Backend; default local.
    pub kind: AttachKind,
    /// Directory of the local backend. Empty means `<data_dir>/files`;
    /// [`Config::load`] resolves it.
    pub dir: PathBuf,
    /// Whether `dir` is one directory every node of a cluster sees (a
    /// network file system); a cluster refuses the local backend without
    /// it. Default false.
    pub shared: bool,
    /// URL path under which the gateway serves local files; default
    /// `/files/` (always starts and ends with `/` after loading).
    pub url_prefix: String,
    /// S3 endpoint (`http://` only), e.g. `http://127.0.0.1:9000`.
    pub s3_endpoint: String,
    /// S3 bucket (path-style addressing).
    pub s3_bucket: String,
    /// S3 region used in signatures; default `us-east-1`.
    pub s3_region: String,
    /// S3 access key id.
    pub s3_access_key: String,
    /// S3 secret key.
    pub s3_secret_key: String,
    /// Public URL base of stored objects; empty = `<endpoint>/<bucket>/`.
    pub s3_public_url: String,
}

/// Section `geo`: nearby people.
#[derive(Debug, Clone)]
pub struct Geo {
    /// Locations older than this are not shown; default 24 h.
    pub ttl: Duration,
    /// Redis URL for GEOADD/GEOSEARCH; empty = the search backend answers.
    pub redis: String,
    /// Prefix of the Redis keys; default `weim:geo`.
    pub redis_prefix: String,
}

/// Which engine answers searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchKind {
    /// The store's SQL.
    #[default]
    Sql,
    /// An Elasticsearch cluster.
    Elasticsearch,
}

/// Section `search`: user, group and nearby search.
#[derive(Debug, Clone)]
pub struct Search {
    /// Backend; default sql.
    pub kind: SearchKind,
    /// Elasticsearch base URL; required when `kind` is elasticsearch.
    pub url: String,
    /// Index of user documents; default `weim_users`.
    pub users_index: String,
    /// Index of group documents; default `weim_groups`.
    pub groups_index: String,
}

impl Default for Attach {
    fn default() -> Self {
        Attach {
            kind: AttachKind::Local,
            dir: PathBuf::new(),
            shared: false,
            url_prefix: "/files/".to_string(),
            s3_endpoint: String::new(),
            s3_bucket: String::new(),
            s3_region: "us-east-1".to_string(),
            s3_access_key: String::new(),
            s3_secret_key: String::new(),
            s3_public_url: String::new(),
        }
    }
}

impl Default for Geo {
    fn default() -> Self {
        Geo {
            ttl: Duration::from_secs(86_400),
            redis: String::new(),
            redis_prefix: "weim:geo".to_string(),
        }
    }
}

impl Default for Search {
    fn default() -> Self {
        Search {
            kind: SearchKind::Sql,
            url: String::new(),
            users_index: "weim_users".to_string(),
            groups_index: "weim_groups".to_string(),
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_token: None,
            admin_fail_limit: 10,
            trusted_proxies: Vec::new(),
            cors_origins: vec!["*".to_string()],
            public_url: String::new(),
            server_api_keys: Vec::new(),
            web: true,
        }
    }
}

impl Default for Node {
    fn default() -> Self {
        Node {
            reactors: 0,
            workers: 0,
            pin_cores: false,
            data_dir: PathBuf::from("./data"),
            job_queue: 4096,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            jwt_secret: None,
            token_ttl: Duration::from_secs(7 * 86_400),
            session_ttl: Duration::from_secs(30 * 86_400),
            user_cache_ttl: Duration::from_secs(10),
            user_cache_size: 100_000,
            auth_timeout: Duration::from_secs(15),
            login_fail_limit_user: 5,
            login_fail_limit_ip: 20,
            login_fail_window: Duration::from_secs(15 * 60),
            fail_delay: Duration::from_secs(1),
            fail_delay_max: Duration::from_secs(15 * 60),
            register_limit_ip: 20,
            register_window: Duration::from_secs(3600),
            throttle_entries: 100_000,
            id_hash_key: None,
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Store {
            kind: StoreKind::Sqlite,
            sqlite_path: PathBuf::new(),
            mysql_url: String::new(),
            pool_size: 0,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_upload: 20 << 20,
            max_message: 64 << 10,
            max_pending_bytes: 256 << 10,
            conns_per_user: 0,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            http_timeout: Duration::from_secs(30),
            max_inflight_body: 256 << 20,
            min_body_rate: 1024,
            max_connections: 0,
            conns_per_ip: 1000,
            max_unauthenticated: 10_000,
            cmd_rate: 200,
            cmd_burst: 1000,
            send_rate: 1000,
            send_burst: 10_000,
            flood_close: Duration::from_secs(10),
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            enabled: false,
            node_id: String::new(),
            advertise: String::new(),
            etcd: Vec::new(),
            redis: String::new(),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// Mutable view of one configuration field, tagged with how its text is parsed.
enum Slot<'a> {
    Addr(&'a mut SocketAddr),
    /// Empty text = `None`.
    OptStr(&'a mut Option<String>),
    Str(&'a mut String),
    Path(&'a mut PathBuf),
    /// Comma-separated in text form; blank items are dropped.
    List(&'a mut Vec<String>),
    /// A list of address blocks, as `List`.
    Cidrs(&'a mut Vec<Cidr>),
    Bool(&'a mut bool),
    Usize(&'a mut usize),
    U32(&'a mut u32),
    /// Parsed by [`parse_size`].
    Size(&'a mut usize),
    /// Parsed by [`parse_duration`]; must be non-zero.
    Dur(&'a mut Duration),
    /// Parsed by [`parse_duration`]; zero turns the feature off.
    DurOff(&'a mut Duration),
    Kind(&'a mut StoreKind),
    AttachKind(&'a mut AttachKind),
    SearchKind(&'a mut SearchKind),
}

/// One configuration key: where it lives, how it parses, its lower bound.
struct Key {
    section: &'static str,
    name: &'static str,
    /// Smallest accepted value for integer and size keys (0 = no bound).
    min: u64,
    slot: for<'a> fn(&'a mut Config) -> Slot<'a>,
}

impl Key {
    fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    fn env_name(&self) -> String {
        format!(
            "WEIM_{}_{}",
            self.section.to_ascii_uppercase(),
            self.name.to_ascii_uppercase()
        )
    }
}

/// Builds the key table: `section.field: Kind` with an optional `>= min`.
macro_rules! keys {
    ($($section:ident . $name:ident : $kind:ident $(>= $min:literal)?),* $(,)?) => {
        &[$(Key {
            section: stringify!($section),
            name: stringify!($name),
            min: 0 $(+ $min)?,
            slot: {
                fn slot(c: &mut Config) -> Slot<'_> {
                    Slot::$kind(&mut c.$section.$name)
                }
                slot
            },
        }),*]
    };
}

/// Every configuration key, in file order.
const KEYS: &[Key] = keys![
    http.listen: Addr,
    http.admin_token: OptStr,
    http.admin_fail_limit: U32,
    http.trusted_proxies: Cidrs,
    http.cors_origins: List,
    http.public_url: Str,
    http.server_api_keys: List,
    http.web: Bool,
    node.reactors: Usize,
    node.workers: Usize,
    node.pin_cores: Bool,
    node.data_dir: Path,
    node.job_queue: Usize >= 1,
    auth.jwt_secret: OptStr,
    auth.token_ttl: Dur,
    auth.session_ttl: Dur,
    auth.user_cache_ttl: DurOff,
    auth.user_cache_size: Usize >= 64,
    auth.auth_timeout: Dur,
    auth.login_fail_limit_user: U32,
    auth.login_fail_limit_ip: U32,
    auth.login_fail_window: Dur,
    auth.fail_delay: Dur,
    auth.fail_delay_max: Dur,
    auth.register_limit_ip: U32,
    auth.register_window: Dur,
    auth.throttle_entries: Usize >= 100,
    auth.id_hash_key: OptStr,
    store.kind: Kind,
    store.sqlite_path: Path,
    store.mysql_url: Str,
    store.pool_size: Usize,
    limits.max_body: Size >= 1024,
    limits.max_upload: Size >= 1024,
    limits.max_message: Size >= 126,
    limits.max_pending_bytes: Size >= 1,
    limits.conns_per_user: Usize,
    limits.ping_interval: DurOff,
    limits.idle_timeout: Dur,
    limits.http_timeout: Dur,
    limits.max_inflight_body: Size >= 1024,
    limits.min_body_rate: Size,
    limits.max_connections: Usize,
    limits.conns_per_ip: Usize,
    limits.max_unauthenticated: Usize,
    limits.cmd_rate: U32,
    limits.cmd_burst: U32 >= 1,
    limits.send_rate: U32,
    limits.send_burst: U32 >= 1,
    limits.flood_close: DurOff,
    cluster.enabled: Bool,
    cluster.node_id: Str,
    cluster.advertise: Str,
    cluster.etcd: List,
    cluster.redis: Str,
    cluster.lease_ttl: Dur,
    attach.kind: AttachKind,
    attach.dir: Path,
    attach.shared: Bool,
    attach.url_prefix: Str,
    attach.s3_endpoint: Str,
    attach.s3_bucket: Str,
    attach.s3_region: Str,
    attach.s3_access_key: Str,
    attach.s3_secret_key: Str,
    attach.s3_public_url: Str,
    geo.ttl: Dur,
    geo.redis: Str,
    geo.redis_prefix: Str,
    search.kind: SearchKind,
    search.url: Str,
    search.users_index: Str,
    search.groups_index: Str,
    chat.max_body_chars: Usize >= 1,
    chat.withdraw_window: Dur,
    chat.commit_queue: Usize >= 1,
    user.default_avatar: Str,
    ws.echo_path: Str,
    webhook.url: Str,
    webhook.secret: Str,
    webhook.events: List,
    webhook.queue: Usize >= 1,
    webhook.max_retries: U32,
    webhook.timeout: Dur,
];

const SECTIONS: &[&str] = &[
    "http", "node", "auth", "store", "limits", "cluster", "attach", "geo", "search", "chat",
    "user", "ws", "webhook",
];

/// A raw value from either source: text (env, YAML scalar) or a YAML sequence.
enum Input {
    Text(String),
    List(Vec<String>),
}

/// Parses `input` into the field behind `slot`; the error names the problem only.
fn assign(slot: Slot<'_>, input: Input) -> Result<(), String> {
    let t = match input {
        Input::Text(t) => t,
        Input::List(items) => match slot {
            Slot::List(v) => {
                *v = clean_list(items.iter().map(String::as_str));
                return Ok(());
            }
            Slot::Cidrs(v) => {
                *v = parse_cidrs(items.iter().map(String::as_str))?;
                return Ok(());
            }
            _ => return Err("expected a single value, got a list".to_string()),
        },
    };
    match slot {
        Slot::Addr(v) => {
            *v = t.trim().parse().map_err(|_| {
                format!("expected an address like 0.0.0.0:8080 or [::1]:8080, got {t:?}")
            })?
        }
        Slot::OptStr(v) => *v = Some(t).filter(|t| !t.is_empty()),
        Slot::Str(v) => *v = t,
        Slot::Path(v) => *v = PathBuf::from(t),
        Slot::List(v) => *v = clean_list(t.split(',')),
        Slot::Cidrs(v) => *v = parse_cidrs(t.split(','))?,
        Slot::Bool(v) => *v = parse_bool(&t)?,
        Slot::Usize(v) => *v = parse_int(&t)?,
        Slot::U32(v) => *v = parse_int(&t)?,
        Slot::Size(v) => *v = parse_size(&t)?,
        Slot::Dur(v) | Slot::DurOff(v) => *v = parse_duration(&t)?,
        Slot::Kind(v) => {
            *v = match t.trim().to_ascii_lowercase().as_str() {
                "sqlite" => StoreKind::Sqlite,
                "mysql" => StoreKind::Mysql,
                _ => return Err(format!("expected sqlite or mysql, got {t:?}")),
            }
        }
        Slot::AttachKind(v) => {
            *v = match t.trim().to_ascii_lowercase().as_str() {
                "local" => AttachKind::Local,
                "s3" => AttachKind::S3,
                _ => return Err(format!("expected local or s3, got {t:?}")),
            }
        }
        Slot::SearchKind(v) => {
            *v = match t.trim().to_ascii_lowercase().as_str() {
                "sql" => SearchKind::Sql,
                "elasticsearch" => SearchKind::Elasticsearch,
                _ => return Err(format!("expected sql or elasticsearch, got {t:?}")),
            }
        }
    }
    Ok(())
}

fn clean_list<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    items
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse_cidrs<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<Cidr>, String> {
    clean_list(items).iter().map(|s| s.parse()).collect()
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("expected true or false, got {s:?}")),
    }
}

fn parse_int<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    let t = s.trim();
    if t.starts_with('+') {
        return Err(format!("expected a non-negative integer, got {s:?}"));
    }
    t.parse()
        .map_err(|_| format!("expected a non-negative integer, got {s:?}"))
}

/// Splits `"64KiB"` into `(64, "KiB")`; `None` when there is no leading number
/// or it does not fit in a `u64`.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let t = s.trim();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(end);
    if digits.is_empty() {
        return None;
    }
    Some((digits.parse().ok()?, unit.trim_start()))
}

/// Largest accepted duration (100 years), so deadlines computed from it never overflow.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses a duration: `"15s"`, `"500ms"`, `"2m"`, `"1h"`, `"7d"`, or a bare
/// integer meaning seconds. At most 100 years.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like 15s, 500ms, 2m, 1h or 7d, got {s:?}");
    let (n, unit) = split_number(s).ok_or_else(bad)?;
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3_600).map(Duration::from_secs),
        "d" => n.checked_mul(86_400).map(Duration::from_secs),
        _ => return Err(bad()),
    };
    d.filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("duration {s:?} is too large (at most 36500d)"))
}

/// Parses a size in bytes: `"65536"`, `"64KiB"`/`"64KB"`/`"64k"`, `"1MiB"`/`"1M"`,
/// `"1GiB"`. Units are binary multiples and case-insensitive.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("expected a size like 65536, 64KiB or 1MiB, got {s:?}");
    let (n, unit) = split_number(s).ok_or_else(bad)?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Short description of a YAML value's type, for error messages.
fn yaml_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A YAML scalar as text (null = empty); `None` for anything else.
fn yaml_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn yaml_input(v: &Value) -> Result<Input, String> {
    if let Some(t) = yaml_text(v) {
        return Ok(Input::Text(t));
    }
    match v {
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                yaml_text(i).ok_or_else(|| {
                    format!(
                        "expected a list of plain values, got {} in it",
                        yaml_kind(i)
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Input::List),
        other => Err(format!("expected a value, got {}", yaml_kind(other))),
    }
}

/// Applies a parsed YAML document (`source` names it in errors) to `cfg`.
fn apply_yaml(cfg: &mut Config, doc: &Value, source: &str) -> Result<(), String> {
    let sections = match doc {
        Value::Null => return Ok(()),
        Value::Mapping(m) => m,
        other => {
            return Err(format!(
                "{source}: expected a mapping of sections ({}), got {}",
                SECTIONS.join(", "),
                yaml_kind(other)
            ))
        }
    };
    for (section, body) in sections {
        let Some(section) = section.as_str() else {
            return Err(format!(
                "{source}: section names must be strings, got {}",
                yaml_kind(section)
            ));
        };
        if !SECTIONS.contains(&section) {
            return Err(format!(
                "{section}: unknown section (expected one of {})",
                SECTIONS.join(", ")
            ));
        }
        let entries = match body {
            Value::Null => continue,
            Value::Mapping(m) => m,
            other => {
                return Err(format!(
                    "{section}: expected a mapping of keys, got {}",
                    yaml_kind(other)
                ))
            }
        };
        for (name, value) in entries {
            let Some(name) = name.as_str() else {
                return Err(format!(
                    "{section}: key names must be strings, got {}",
                    yaml_kind(name)
                ));
            };
            let key = KEYS
                .iter()
                .find(|k| k.section == section && k.name == name)
                .ok_or_else(|| format!("{section}.{name}: unknown key"))?;
            yaml_input(value)
                .and_then(|input| assign((key.slot)(cfg), input))
                .map_err(|e| format!("{}: {e}", key.path()))?;
        }
    }
    Ok(())
}

/// Applies `WEIM_*` variables to `cfg` (and the test-only `WEIM_FAULT`);
/// other variables are ignored.
fn apply_env(
    cfg: &mut Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), String> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with("WEIM_"))
        .collect();
    // Stable sort: deterministic errors, and a repeated variable keeps its last value.
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (var, value) in vars {
        if var == fault::VAR {
            cfg.fault = Some(Fault::parse(&value)?);
            continue;
        }
        let key = KEYS
            .iter()
            .find(|k| k.env_name() == var)
            .ok_or_else(|| format!("{var}: unknown WEIM_ variable, it matches no configuration key (expected WEIM_<SECTION>_<KEY>)"))?;
        assign((key.slot)(cfg), Input::Text(value))
            .map_err(|e| format!("{}: {e} (from {var})", key.path()))?;
    }
    Ok(())
}

/// Checks the merged configuration and resolves derived defaults.
fn validate(cfg: &mut Config) -> Result<(), String> {
    for key in KEYS {
        let problem = match (key.slot)(cfg) {
            Slot::Usize(v) if (*v as u64) < key.min => {
                Some(format!("must be at least {}, got {v}", key.min))
            }
            Slot::Size(v) if (*v as u64) < key.min => {
                Some(format!("must be at least {} bytes, got {v}", key.min))
            }
            Slot::U32(v) if u64::from(*v) < key.min => {
                Some(format!("must be at least {}, got {v}", key.min))
            }
            Slot::Dur(v) if v.is_zero() => Some("must be greater than zero".to_string()),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(format!("{}: {problem}", key.path()));
        }
    }
    if cfg.node.data_dir.as_os_str().is_empty() {
        return Err("node.data_dir: must not be empty".to_string());
    }
    if let Some(token) = &cfg.http.admin_token {
        if token.chars().count() < MIN_ADMIN_TOKEN {
            return Err(format!(
                "http.admin_token: at least {MIN_ADMIN_TOKEN} characters (a long random string), \
                 got {}; empty turns the admin routes off",
                token.chars().count()
            ));
        }
    }
    if cfg.auth.fail_delay_max < cfg.auth.fail_delay {
        return Err("auth.fail_delay_max: must be at least auth.fail_delay".to_string());
    }
    if cfg.store.kind == StoreKind::Mysql && cfg.store.mysql_url.is_empty() {
        return Err("store.mysql_url: required when store.kind is mysql".to_string());
    }
    if cfg.cluster.enabled {
        let mut missing = Vec::new();
        if cfg.cluster.etcd.is_empty() {
            missing.push("cluster.etcd");
        }
        if cfg.cluster.redis.is_empty() {
            missing.push("cluster.redis");
        }
        if cfg.auth.jwt_secret.is_none() {
            missing.push("auth.jwt_secret");
        }
        if cfg.store.kind != StoreKind::Mysql {
            missing.push("store.kind: mysql");
        }
        if !missing.is_empty() {
            return Err(format!(
                "cluster.enabled: a cluster requires cluster.etcd (at least one endpoint), \
                 cluster.redis, a shared auth.jwt_secret and a shared store (store.kind: mysql); \
                 missing {}",
                missing.join(", ")
            ));
        }
    }
    if cfg.limits.max_inflight_body < cfg.limits.max_upload.max(cfg.limits.max_body) {
        return Err(format!(
            "limits.max_inflight_body: must be at least limits.max_upload and limits.max_body \
             (one largest body must fit), got {}",
            cfg.limits.max_inflight_body
        ));
    }
    if cfg.cluster.lease_ttl < Duration::from_secs(2) {
        return Err("cluster.lease_ttl: at least 2s (etcd's shortest lease)".to_string());
    }
    if !cfg.cluster.node_id.is_empty() && !valid_node_id(&cfg.cluster.node_id) {
        return Err(format!(
            "cluster.node_id: {:?} must be 1-64 letters, digits, '-', '_' or '.'",
            cfg.cluster.node_id
        ));
    }
    if cfg.store.sqlite_path.as_os_str().is_empty() {
        cfg.store.sqlite_path = cfg.node.data_dir.join("weim.db");
    }
    validate_attach(&mut cfg.attach, &cfg.node.data_dir)?;
    if cfg.cluster.enabled && cfg.attach.kind == AttachKind::Local && !cfg.attach.shared {
        return Err(
            "attach.kind: local keeps each upload on the node that received it, so in a \
             cluster the other nodes answer 404 for it; use attach.kind: s3, or put \
             attach.dir on storage every node shares and set attach.shared: true"
                .to_string(),
        );
    }
    validate_echo_path(&cfg.ws, &cfg.attach)?;
    validate_urls(cfg)?;
    validate_backend(cfg)?;
    if cfg.search.kind == SearchKind::Elasticsearch && cfg.search.url.is_empty() {
        return Err("search.url: required when search.kind is elasticsearch".to_string());
    }
    Ok(())
}

/// Whether `path` is `/segment[/segment…]` of letters, digits and `- . _ ~`
/// whose first segment is not in `reserved`.
fn free_path(path: &str, reserved: &[&str]) -> bool {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    };
    path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(segment_ok)
            && rest
                .split('/')
                .next()
                .is_some_and(|s| !reserved.contains(&s))
    })
}

/// Checks `ws.echo_path`: empty, or a path none of the gateway's routes
/// answers (it is matched before them).
fn validate_echo_path(ws: &Ws, attach: &Attach) -> Result<(), String> {
    let path = ws.echo_path.as_str();
    if path.is_empty() {
        return Ok(());
    }
    let under_uploads = format!("{path}/").starts_with(attach.url_prefix.as_str());
    let routes = [
        "api", "server", "ws", "healthz", "metrics", "cluster", "public",
    ];
    if !free_path(path, &routes) || under_uploads {
        return Err(format!(
            "ws.echo_path: expected empty or a URL path like /echo (letters, digits, - . _ ~) \
             outside the gateway's routes and {}, got {path:?}",
            attach.url_prefix
        ));
    }
    Ok(())
}

/// Checks section `attach` and resolves its derived defaults.
fn validate_attach(a: &mut Attach, data_dir: &Path) -> Result<(), String> {
    let prefix = a.url_prefix.trim_end_matches('/');
    if !free_path(prefix, &["api", "server", "ws", "healthz", "metrics"]) {
        return Err(format!(
            "attach.url_prefix: expected a URL path like /files/ (letters, digits, - . _ ~), got {:?}",
            a.url_prefix
        ));
    }
    a.url_prefix = format!("{prefix}/");
    if a.kind == AttachKind::S3 {
        let missing: Vec<&str> = [
            ("attach.s3_endpoint", &a.s3_endpoint),
            ("attach.s3_bucket", &a.s3_bucket),
            ("attach.s3_region", &a.s3_region),
            ("attach.s3_access_key", &a.s3_access_key),
            ("attach.s3_secret_key", &a.s3_secret_key),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| k)
        .collect();
        if !missing.is_empty() {
            return Err(format!("attach.kind: s3 requires {}", missing.join(", ")));
        }
    }
    if a.dir.as_os_str().is_empty() {
        a.dir = data_dir.join("files");
    }
    Ok(())
}

/// Whether `s` is an absolute `http://` or `https://` URL with a host and
/// without blanks or control characters.
fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Checks `http.public_url` and `user.default_avatar`; drops the former's
/// trailing `/`.
fn validate_urls(cfg: &mut Config) -> Result<(), String> {
    let base = cfg.http.public_url.trim().trim_end_matches('/').to_string();
    if !base.is_empty() && !is_http_url(&base) {
        return Err(format!(
            "http.public_url: expected empty or a URL like https://im.example.com, got {:?}",
            cfg.http.public_url
        ));
    }
    cfg.http.public_url = base;
    let avatar = &cfg.user.default_avatar;
    let path_ok = avatar.starts_with('/')
        && !avatar.starts_with("//")
        && !avatar.chars().any(|c| c.is_whitespace() || c.is_control());
    if !avatar.is_empty() && !path_ok && !is_http_url(avatar) {
        return Err(format!(
            "user.default_avatar: expected empty, a path like /public/avatar/default.png \
             or a URL like https://cdn.example.com/a.png, got {avatar:?}"
        ));
    }
    Ok(())
}

/// Checks `http.server_api_keys` and section `webhook`.
fn validate_backend(cfg: &Config) -> Result<(), String> {
    if let Some(short) = cfg
        .http
        .server_api_keys
        .iter()
        .find(|k| k.chars().count() < MIN_API_KEY_LEN)
    {
        return Err(format!(
            "http.server_api_keys: every key needs at least {MIN_API_KEY_LEN} characters, \
             one has {}",
            short.chars().count()
        ));
    }
    let w = &cfg.webhook;
    if let Some(unknown) = w
        .events
        .iter()
        .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
    {
        return Err(format!(
            "webhook.events: unknown event {unknown:?}; known: {}",
            WEBHOOK_EVENTS.join(", ")
        ));
    }
    if !w.url.is_empty() && !is_http_url(&w.url) {
        return Err(format!(
            "webhook.url: expected empty or a URL like https://backend.example.com/weim, got {:?}",
            w.url
        ));
    }
    if !w.url.is_empty() && w.secret.is_empty() {
        return Err("webhook.secret: required when webhook.url is set".to_string());
    }
    Ok(())
}

/// Whether `id` can name a node: 1-64 ASCII letters, digits, `-`, `_`, `.`
/// (it becomes part of etcd keys, Redis keys and channel names).
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Config {
    /// Reads the YAML file (if `path` is Some; None = defaults only), then applies
    /// `WEIM_*` overrides from `env` (typically `std::env::vars()`), then validates.
    ///
    /// Environment values win over the file. The error is one line naming the key
    /// (or file, or variable) and the problem, e.g.
    /// `limits.max_body: expected a size like 65536, 64KiB or 1MiB, got "lots"`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, String> {
        let mut cfg = Config::default();
        if let Some(path) = path {
            let source = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{source}: cannot read config file: {e}"))?;
            let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
                let msg = e.to_string().replace('\n', " ");
                format!("{source}: invalid YAML: {msg}")
            })?;
            apply_yaml(&mut cfg, &doc, &source)?;
        }
        apply_env(&mut cfg, env)?;
        validate(&mut cfg)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn yaml_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load_yaml(text: &str) -> Result<Config, String> {
        let f = yaml_file(text);
        Config::load(Some(f.path()), env(&[]))
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, String> {
        Config::load(None, env(pairs))
    }

    /// Asserts an error starts with `prefix` and contains `needle` on a single line.
    fn assert_err(result: Result<Config, String>, prefix: &str, needle: &str) {
        let err = result.expect_err("expected an error");
        assert!(
            err.starts_with(prefix),
            "{err:?} should start with {prefix:?}"
        );
        assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        assert!(!err.contains('\n'), "{err:?} should be one line");
    }

    fn same(a: &Config, b: &Config) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.http.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.http.admin_token, None);
        assert_eq!(c.http.cors_origins, vec!["*"]);
        assert_eq!(c.http.public_url, "");
        assert!(c.http.web);
        assert_eq!(c.user.default_avatar, "/public/avatar/default.png");
        assert_eq!(c.node.reactors, 0);
        assert_eq!(c.node.workers, 0);
        assert!(!c.node.pin_cores);
        assert_eq!(c.node.data_dir, PathBuf::from("./data"));
        assert_eq!(c.node.job_queue, 4096);
        assert_eq!(c.auth.jwt_secret, None);
        assert_eq!(c.auth.token_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(c.auth.session_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.auth.user_cache_ttl, Duration::from_secs(10));
        assert_eq!(c.auth.user_cache_size, 100_000);
        assert_eq!(c.auth.auth_timeout, Duration::from_secs(15));
        assert_eq!(c.auth.login_fail_limit_user, 5);
        assert_eq!(c.auth.login_fail_limit_ip, 20);
        assert_eq!(c.auth.login_fail_window, Duration::from_secs(900));
        assert_eq!(c.auth.fail_delay, Duration::from_secs(1));
        assert_eq!(c.auth.fail_delay_max, Duration::from_secs(900));
        assert_eq!(c.auth.register_limit_ip, 20);
        assert_eq!(c.auth.register_window, Duration::from_secs(3600));
        assert_eq!(c.auth.throttle_entries, 100_000);
        assert_eq!(c.http.admin_fail_limit, 10);
        assert!(c.http.trusted_proxies.is_empty());
        assert_eq!(c.store.kind, StoreKind::Sqlite);
        assert_eq!(c.store.sqlite_path, PathBuf::new());
        assert_eq!(c.store.mysql_url, "");
        assert_eq!(c.store.pool_size, 0);
        assert_eq!(c.limits.max_body, 1 << 20);
        assert_eq!(c.limits.max_message, 64 << 10);
        assert_eq!(c.limits.max_pending_bytes, 256 << 10);
        assert_eq!(c.limits.conns_per_user, 0);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.limits.ping_interval, Duration::from_secs(30));
        assert_eq!(c.limits.http_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.max_inflight_body, 256 << 20);
        assert_eq!(c.limits.min_body_rate, 1024);
        assert_eq!(c.limits.max_connections, 0);
        assert_eq!(c.limits.conns_per_ip, 1000);
        assert_eq!(c.limits.max_unauthenticated, 10_000);
        assert_eq!((c.limits.cmd_rate, c.limits.cmd_burst), (200, 1000));
        assert_eq!((c.limits.send_rate, c.limits.send_burst), (1000, 10_000));
        assert_eq!(c.limits.flood_close, Duration::from_secs(10));
        assert!(!c.cluster.enabled);
        assert_eq!(c.cluster.node_id, "");
        assert_eq!(c.cluster.advertise, "");
        assert!(c.cluster.etcd.is_empty());
        assert_eq!(c.cluster.redis, "");
        assert_eq!(c.cluster.lease_ttl, Duration::from_secs(10));
        assert_eq!(c.auth.id_hash_key, None);
        assert_eq!(c.limits.max_upload, 20 << 20);
        assert_eq!(c.attach.kind, AttachKind::Local);
        assert_eq!(c.attach.url_prefix, "/files/");
        assert_eq!(c.attach.s3_region, "us-east-1");
        assert_eq!(c.geo.ttl, Duration::from_secs(86_400));
        assert_eq!(c.geo.redis, "");
        assert_eq!(c.geo.redis_prefix, "weim:geo");
        assert_eq!(c.search.kind, SearchKind::Sql);
        assert_eq!(c.search.users_index, "weim_users");

        // Loading nothing gives the defaults with sqlite_path resolved.
        let loaded = load_env(&[]).unwrap();
        assert_eq!(loaded.store.sqlite_path, PathBuf::from("./data/weim.db"));
        assert_eq!(loaded.attach.dir, PathBuf::from("./data/files"));
        let mut expected = Config::default();
        expected.store.sqlite_path = PathBuf::from("./data/weim.db");
        expected.attach.dir = PathBuf::from("./data/files");
        assert!(same(&loaded, &expected));
    }

    #[test]
    fn key_table_is_consistent() {
        let mut paths: Vec<String> = KEYS.iter().map(Key::path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), KEYS.len(), "duplicate key");
        let mut vars: Vec<String> = KEYS.iter().map(Key::env_name).collect();
        vars.sort();
        vars.dedup();
        assert_eq!(vars.len(), KEYS.len(), "ambiguous environment name");
        assert!(KEYS.iter().all(|k| SECTIONS.contains(&k.section)));
        assert_eq!(
            KEYS.len(),
            8 + 5 + 15 + 4 + 18 + 6 + 10 + 3 + 4 + 3 + 1 + 1 + 6
        );
    }

    #[test]
    fn empty_and_comment_only_files_give_defaults() {
        let defaults = load_env(&[]).unwrap();
        for text in [
            "",
            "\n",
            "# nothing here\n# at all\n",
            "---\n",
            "http:\n# a\n",
        ] {
            let c = load_yaml(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(same(&c, &defaults), "{text:?}");
        }
    }

    #[test]
    fn file_parsing() {
        let c = load_yaml(
            r#"
http:
  listen: "127.0.0.1:9001"
  admin_token: s3cret-s3cret-s3cret
  admin_fail_limit: 4
  trusted_proxies: [10.0.0.0/8, "::1"]
  cors_origins: [https://a.example, "https://b.example"]
node:
  reactors: 2
  workers: "3"
  pin_cores: "true"
  data_dir: /var/lib/weim
  job_queue: 10
auth:
  jwt_secret: abc
  token_ttl: 1h
  auth_timeout: 5
  login_fail_limit_user: "7"
  login_fail_limit_ip: 30
  login_fail_window: 2m
  fail_delay: 2s
  fail_delay_max: 1m
  register_limit_ip: 0
  register_window: 10m
  throttle_entries: 5000
store:
  kind: mysql
  mysql_url: mysql://u:p@db:3306/weim
  pool_size: 4
limits:
  max_body: 2MiB
  max_message: 65536
  max_pending_bytes: 512k
  conns_per_user: 1
  idle_timeout: 500ms
  http_timeout: "10s"
  max_connections: 1000
  conns_per_ip: 0
  max_unauthenticated: 50
  cmd_rate: 20
  cmd_burst: 40
  send_rate: 0
  send_burst: 5
  flood_close: 0s
cluster:
  enabled: true
  node_id: n1
  advertise: 10.0.0.1:8080
  etcd:
    - http://127.0.0.1:2379
  redis: redis://127.0.0.1:6379
  lease_ttl: 3s
attach:
  dir: /mnt/shared/weim
  shared: true
"#,
        )
        .unwrap();
        assert!(c.attach.shared);
        assert_eq!(c.http.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(c.http.admin_token.as_deref(), Some("s3cret-s3cret-s3cret"));
        assert_eq!(c.http.admin_fail_limit, 4);
        let proxies: Vec<String> = c
            .http
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "::1/128"]);
        assert_eq!(
            c.http.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!((c.node.reactors, c.node.workers), (2, 3));
        assert!(c.node.pin_cores);
        assert_eq!(c.node.data_dir, PathBuf::from("/var/lib/weim"));
        assert_eq!(c.node.job_queue, 10);
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("abc"));
        assert_eq!(c.auth.token_ttl, Duration::from_secs(3600));
        assert_eq!(c.auth.auth_timeout, Duration::from_secs(5));
        assert_eq!(c.auth.login_fail_limit_user, 7);
        assert_eq!(c.auth.login_fail_limit_ip, 30);
        assert_eq!(c.auth.login_fail_window, Duration::from_secs(120));
        assert_eq!(c.auth.fail_delay, Duration::from_secs(2));
        assert_eq!(c.auth.fail_delay_max, Duration::from_secs(60));
        assert_eq!(c.auth.register_limit_ip, 0);
        assert_eq!(c.auth.register_window, Duration::from_secs(600));
        assert_eq!(c.auth.throttle_entries, 5000);
        assert_eq!(c.store.kind, StoreKind::Mysql);
        assert_eq!(c.store.mysql_url, "mysql://u:p@db:3306/weim");
        assert_eq!(c.store.pool_size, 4);
        assert_eq!(c.store.sqlite_path, PathBuf::from("/var/lib/weim/weim.db"));
        assert_eq!(c.limits.max_body, 2 << 20);
        assert_eq!(c.limits.max_message, 65536);
        assert_eq!(c.limits.max_pending_bytes, 512 << 10);
        assert_eq!(c.limits.conns_per_user, 1);
        assert_eq!(c.limits.idle_timeout, Duration::from_millis(500));
        assert_eq!(c.limits.http_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.max_connections, 1000);
        assert_eq!(c.limits.conns_per_ip, 0);
        assert_eq!(c.limits.max_unauthenticated, 50);
        assert_eq!((c.limits.cmd_rate, c.limits.cmd_burst), (20, 40));
        assert_eq!((c.limits.send_rate, c.limits.send_burst), (0, 5));
        assert_eq!(c.limits.flood_close, Duration::ZERO);
        assert!(c.cluster.enabled);
        assert_eq!(c.cluster.node_id, "n1");
        assert_eq!(c.cluster.advertise, "10.0.0.1:8080");
        assert_eq!(c.cluster.etcd, vec!["http://127.0.0.1:2379"]);
        assert_eq!(c.cluster.redis, "redis://127.0.0.1:6379");
        assert_eq!(c.cluster.lease_ttl, Duration::from_secs(3));
    }

    #[test]
    fn explicit_sqlite_path_is_kept() {
        let c = load_yaml("store:\n  sqlite_path: /tmp/x.db\nnode:\n  data_dir: /srv\n").unwrap();
        assert_eq!(c.store.sqlite_path, PathBuf::from("/tmp/x.db"));
        let c = load_env(&[("WEIM_NODE_DATA_DIR", "/srv")]).unwrap();
        assert_eq!(c.store.sqlite_path, PathBuf::from("/srv/weim.db"));
    }

    #[test]
    fn empty_strings_mean_none_or_empty() {
        let c =
            load_yaml("http:\n  admin_token: \"\"\n  cors_origins: \"\"\nauth:\n  jwt_secret:\n")
                .unwrap();
        assert_eq!(c.http.admin_token, None);
        assert!(c.http.cors_origins.is_empty());
        assert_eq!(c.auth.jwt_secret, None);
    }

    #[test]
    fn env_overrides_file() {
        let f = yaml_file(
            "http:\n  listen: 127.0.0.1:1000\n  admin_token: fromfile-fromfile\nlimits:\n  max_body: 4MiB\n  conns_per_user: 3\n",
        );
        let c = Config::load(
            Some(f.path()),
            env(&[
                ("WEIM_HTTP_LISTEN", "127.0.0.1:9001"),
                ("WEIM_LIMITS_MAX_BODY", "2MiB"),
                ("WEIM_STORE_KIND", "mysql"),
                ("WEIM_STORE_MYSQL_URL", "mysql://localhost/weim"),
                (
                    "WEIM_CLUSTER_ETCD",
                    "http://127.0.0.1:2379, http://127.0.0.1:22379",
                ),
                ("WEIM_HTTP_CORS_ORIGINS", ""),
                ("WEIM_NODE_PIN_CORES", "yes"),
                ("PATH", "/usr/bin"),
                ("weim_http_listen", "not even an address"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(c.limits.max_body, 2 << 20);
        // Keys the environment does not mention keep the file's value.
        assert_eq!(c.http.admin_token.as_deref(), Some("fromfile-fromfile"));
        assert_eq!(c.limits.conns_per_user, 3);
        assert_eq!(c.store.kind, StoreKind::Mysql);
        assert_eq!(
            c.cluster.etcd,
            vec!["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
        );
        assert!(c.http.cors_origins.is_empty());
        assert!(c.node.pin_cores);

        // An empty variable clears an optional string set in the file.
        let c = Config::load(Some(f.path()), env(&[("WEIM_HTTP_ADMIN_TOKEN", "")])).unwrap();
        assert_eq!(c.http.admin_token, None);
    }

    #[test]
    fn every_key_has_an_env_variable() {
        for key in KEYS {
            let mut probe = Config::default();
            let value = match (key.slot)(&mut probe) {
                Slot::Addr(_) => "127.0.0.1:1",
                Slot::OptStr(_) | Slot::Str(_) | Slot::Path(_) | Slot::List(_) => "/probe",
                Slot::Cidrs(_) => "10.0.0.0/8",
                // The opposite of the default.
                Slot::Bool(b) if *b => "false",
                Slot::Bool(_) => "true",
                Slot::Usize(_) | Slot::U32(_) => "3",
                Slot::Size(_) => "3MiB",
                Slot::Dur(_) | Slot::DurOff(_) => "3d",
                Slot::Kind(_) => "mysql",
                Slot::AttachKind(_) => "s3",
                Slot::SearchKind(_) => "elasticsearch",
            };
            // A node id becomes part of keys: no '/'.
            let value = match key.env_name().as_str() {
                "WEIM_CLUSTER_NODE_ID" => "probe",
                "WEIM_HTTP_PUBLIC_URL" => "https://probe",
                "WEIM_HTTP_ADMIN_TOKEN" => "/probe-long-enough",
                "WEIM_AUTH_THROTTLE_ENTRIES" => "300",
                "WEIM_AUTH_FAIL_DELAY" => "3s",
                // At least limits.max_upload (20 MiB).
                "WEIM_LIMITS_MAX_INFLIGHT_BODY" => "300MiB",
                "WEIM_HTTP_SERVER_API_KEYS" => "probe-key-0123456789",
                "WEIM_WEBHOOK_URL" => "http://probe",
                "WEIM_WEBHOOK_EVENTS" => "user.online",
                "WEIM_AUTH_USER_CACHE_SIZE" => "640",
                _ => value,
            };
            let mut vars = vec![(key.env_name(), value.to_string())];
            // Companion settings that validation demands.
            for (k, v) in [
                ("WEIM_STORE_MYSQL_URL", "mysql://x/y"),
                ("WEIM_CLUSTER_ETCD", "http://e:2379"),
                ("WEIM_CLUSTER_REDIS", "redis://r"),
                ("WEIM_AUTH_JWT_SECRET", "s"),
                ("WEIM_ATTACH_S3_ENDPOINT", "http://s3"),
                ("WEIM_ATTACH_S3_BUCKET", "b"),
                ("WEIM_ATTACH_S3_ACCESS_KEY", "a"),
                ("WEIM_ATTACH_S3_SECRET_KEY", "s"),
                ("WEIM_SEARCH_URL", "http://es:9200"),
                ("WEIM_WEBHOOK_SECRET", "s"),
            ] {
                if k != key.env_name() {
                    vars.push((k.to_string(), v.to_string()));
                }
            }
            if key.env_name() == "WEIM_CLUSTER_ENABLED" {
                vars.push(("WEIM_STORE_KIND".to_string(), "mysql".to_string()));
                vars.push(("WEIM_ATTACH_SHARED".to_string(), "true".to_string()));
            }
            let c = Config::load(None, vars.clone()).unwrap_or_else(|e| panic!("{e}"));
            vars.remove(0);
            let base = Config::load(None, vars).unwrap();
            assert!(!same(&c, &base), "{} had no effect", key.env_name());
        }
    }

    #[test]
    fn unknown_section_or_key_in_file() {
        assert_err(
            load_yaml("htp:\n  listen: 1.2.3.4:5\n"),
            "htp: unknown section",
            "http",
        );
        assert_err(
            load_yaml("http:\n  lsten: 1.2.3.4:5\n"),
            "http.lsten: unknown key",
            "",
        );
        assert_err(
            load_yaml("limits:\n  max_bdy: 1\n"),
            "limits.max_bdy:",
            "unknown key",
        );
        assert_err(
            load_yaml("- a\n- b\n"),
            "",
            "expected a mapping of sections",
        );
        assert_err(
            load_yaml("http: 5\n"),
            "http: expected a mapping of keys",
            "number",
        );
        assert_err(
            load_yaml("http: [a]\n"),
            "http: expected a mapping of keys",
            "list",
        );
        assert_err(
            load_yaml("http:\n  listen: [a]\n"),
            "http.listen:",
            "got a list",
        );
        assert_err(
            load_yaml("http:\n  listen: {a: 1}\n"),
            "http.listen:",
            "mapping",
        );
        assert_err(
            load_yaml("cluster:\n  etcd: [{a: 1}]\n"),
            "cluster.etcd:",
            "list of plain values",
        );
        assert_err(load_yaml("http:\n  listen: [\n"), "", "invalid YAML");
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.yml");
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn unknown_weim_variable() {
        assert_err(
            load_env(&[("WEIM_HTTP_LISTN", "x")]),
            "WEIM_HTTP_LISTN:",
            "unknown",
        );
        assert_err(load_env(&[("WEIM_FOO", "")]), "WEIM_FOO:", "unknown");
        assert_err(
            load_env(&[("WEIM_http_listen", "1.2.3.4:5")]),
            "WEIM_http_listen:",
            "",
        );
        // Anything else is not ours.
        assert!(load_env(&[("HOME", "/root"), ("XWEIM_HTTP_LISTEN", "x")]).is_ok());
    }

    #[test]
    fn fault_variable_is_test_only_and_checked() {
        assert_eq!(load_env(&[]).unwrap().fault, None);
        let c = load_env(&[("WEIM_FAULT", "commit-panic")]).unwrap();
        assert_eq!(c.fault, Some(Fault::CommitPanic));
        assert_err(
            load_env(&[("WEIM_FAULT", "oops")]),
            "WEIM_FAULT:",
            "unknown fault",
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        assert_eq!(
            load_yaml("limits:\n  max_body: lots\n").unwrap_err(),
            "limits.max_body: expected a size like 65536, 64KiB or 1MiB, got \"lots\""
        );
        assert_err(
            load_yaml("limits:\n  max_body: -5\n"),
            "limits.max_body:",
            "\"-5\"",
        );
        assert_err(
            load_yaml("auth:\n  token_ttl: soon\n"),
            "auth.token_ttl:",
            "duration",
        );
        assert_err(
            load_yaml("auth:\n  token_ttl: 1.5\n"),
            "auth.token_ttl:",
            "duration",
        );
        assert_err(
            load_yaml("node:\n  pin_cores: maybe\n"),
            "node.pin_cores:",
            "true or false",
        );
        assert_err(
            load_yaml("node:\n  pin_cores: 2\n"),
            "node.pin_cores:",
            "true or false",
        );
        assert_err(
            load_yaml("http:\n  listen: localhost\n"),
            "http.listen:",
            "address",
        );
        assert_err(
            load_yaml("http:\n  listen: 8080\n"),
            "http.listen:",
            "address",
        );
        assert_err(
            load_yaml("node:\n  workers: -1\n"),
            "node.workers:",
            "non-negative",
        );
        assert_err(
            load_yaml("node:\n  workers: many\n"),
            "node.workers:",
            "non-negative",
        );
        assert_err(
            load_yaml("node:\n  workers:\n"),
            "node.workers:",
            "non-negative",
        );
        assert_err(
            load_yaml("auth:\n  login_fail_limit_ip: 5000000000\n"),
            "auth.login_fail_limit_ip:",
            "non-negative",
        );
        assert_err(
            load_yaml("store:\n  kind: postgres\n"),
            "store.kind:",
            "sqlite or mysql",
        );

        assert_err(
            load_env(&[("WEIM_LIMITS_MAX_BODY", "lots")]),
            "limits.max_body: expected a size",
            "WEIM_LIMITS_MAX_BODY",
        );
        assert_err(
            load_env(&[("WEIM_AUTH_TOKEN_TTL", "7 days")]),
            "auth.token_ttl:",
            "duration",
        );
        assert_err(
            load_env(&[("WEIM_NODE_PIN_CORES", "si")]),
            "node.pin_cores:",
            "true or false",
        );
        assert_err(
            load_env(&[("WEIM_HTTP_LISTEN", "nowhere")]),
            "http.listen:",
            "nowhere",
        );
    }

    #[test]
    fn validation_bounds() {
        assert_err(
            load_env(&[("WEIM_LIMITS_MAX_BODY", "1000")]),
            "limits.max_body:",
            "1024",
        );
        assert!(load_env(&[("WEIM_LIMITS_MAX_BODY", "1KiB")]).is_ok());
        assert_err(
            load_env(&[("WEIM_LIMITS_MAX_MESSAGE", "125")]),
            "limits.max_message:",
            "126",
        );
        assert!(load_env(&[("WEIM_LIMITS_MAX_MESSAGE", "126")]).is_ok());
        assert_err(
            load_env(&[("WEIM_LIMITS_MAX_PENDING_BYTES", "0")]),
            "limits.max_pending_bytes:",
            "",
        );
        assert_err(
            load_env(&[("WEIM_NODE_JOB_QUEUE", "0")]),
            "node.job_queue:",
            "at least 1",
        );
        assert_err(
            load_env(&[("WEIM_LIMITS_IDLE_TIMEOUT", "0s")]),
            "limits.idle_timeout:",
            "zero",
        );
        assert_err(
            load_env(&[("WEIM_CLUSTER_LEASE_TTL", "0")]),
            "cluster.lease_ttl:",
            "zero",
        );
        assert_err(
            load_env(&[("WEIM_NODE_DATA_DIR", "")]),
            "node.data_dir:",
            "empty",
        );
        assert_err(
            load_env(&[("WEIM_STORE_KIND", "mysql")]),
            "store.mysql_url:",
            "mysql",
        );
        // The admin token is long or off.
        assert_err(
            load_env(&[("WEIM_HTTP_ADMIN_TOKEN", "test-admin")]),
            "http.admin_token:",
            "at least 16 characters",
        );
        assert!(load_env(&[("WEIM_HTTP_ADMIN_TOKEN", "0123456789abcdef")]).is_ok());
        assert_err(
            load_env(&[
                ("WEIM_AUTH_FAIL_DELAY", "2m"),
                ("WEIM_AUTH_FAIL_DELAY_MAX", "1m"),
            ]),
            "auth.fail_delay_max:",
            "auth.fail_delay",
        );
        assert_err(
            load_env(&[("WEIM_AUTH_THROTTLE_ENTRIES", "99")]),
            "auth.throttle_entries:",
            "at least 100",
        );
        assert_err(
            load_env(&[("WEIM_HTTP_TRUSTED_PROXIES", "10.0.0.0/8, proxy.example")]),
            "http.trusted_proxies:",
            "proxy.example",
        );
        assert_err(
            load_yaml("http:\n  trusted_proxies: [10.0.0.0/33]\n"),
            "http.trusted_proxies:",
            "10.0.0.0/33",
        );
        // Zero means "unlimited"/"automatic"/"off" for these.
        assert!(load_env(&[
            ("WEIM_AUTH_REGISTER_LIMIT_IP", "0"),
            ("WEIM_LIMITS_CONNS_PER_USER", "0"),
            ("WEIM_LIMITS_PING_INTERVAL", "0s"),
            ("WEIM_LIMITS_MAX_CONNECTIONS", "0"),
            ("WEIM_STORE_POOL_SIZE", "0")
        ])
        .is_ok());
    }

    #[test]
    fn echo_path_validation() {
        assert_eq!(load_env(&[]).unwrap().ws.echo_path, "");
        let c = load_env(&[("WEIM_WS_ECHO_PATH", "/echo")]).unwrap();
        assert_eq!(c.ws.echo_path, "/echo");
        assert!(load_env(&[("WEIM_WS_ECHO_PATH", "/test/ws-echo")]).is_ok());
        for bad in [
            "echo",
            "/",
            "/echo/",
            "/a//b",
            "/../x",
            "/a b",
            "/ws",
            "/ws/status",
            "/api/v1/x",
            "/healthz",
            "/metrics",
            "/cluster",
            "/public/avatar/default.png",
            "/files",
            "/files/x",
        ] {
            assert_err(
                load_env(&[("WEIM_WS_ECHO_PATH", bad)]),
                "ws.echo_path:",
                "URL path",
            );
        }
    }

    #[test]
    fn attach_and_search_validation() {
        let c = load_env(&[("WEIM_ATTACH_URL_PREFIX", "/static/up")]).unwrap();
        assert_eq!(c.attach.url_prefix, "/static/up/");
        for bad in ["files/", "/", "/a//b/", "/../x/", "/api/", "/ws/", "/a b/"] {
            assert_err(
                load_env(&[("WEIM_ATTACH_URL_PREFIX", bad)]),
                "attach.url_prefix:",
                "URL path",
            );
        }
        assert_err(
            load_env(&[("WEIM_ATTACH_KIND", "s3"), ("WEIM_ATTACH_S3_BUCKET", "b")]),
            "attach.kind:",
            "attach.s3_endpoint, attach.s3_access_key, attach.s3_secret_key",
        );
        assert_err(
            load_env(&[("WEIM_ATTACH_KIND", "ftp")]),
            "attach.kind:",
            "local or s3",
        );
        assert_err(
            load_env(&[("WEIM_SEARCH_KIND", "elasticsearch")]),
            "search.url:",
            "required",
        );
        assert_err(
            load_env(&[("WEIM_SEARCH_KIND", "solr")]),
            "search.kind:",
            "sql or elasticsearch",
        );
        assert_err(load_env(&[("WEIM_GEO_TTL", "0")]), "geo.ttl:", "zero");
        assert_err(
            load_env(&[("WEIM_LIMITS_MAX_UPLOAD", "10")]),
            "limits.max_upload:",
            "1024",
        );
        assert_err(
            load_env(&[("WEIM_LIMITS_MAX_INFLIGHT_BODY", "10MiB")]),
            "limits.max_inflight_body:",
            "limits.max_upload",
        );
    }

    #[test]
    fn public_url_and_default_avatar_validation() {
        let c = load_env(&[("WEIM_HTTP_PUBLIC_URL", "https://im.example.com/")]).unwrap();
        assert_eq!(c.http.public_url, "https://im.example.com");
        let c = load_env(&[("WEIM_HTTP_PUBLIC_URL", "http://10.0.0.1:8080")]).unwrap();
        assert_eq!(c.http.public_url, "http://10.0.0.1:8080");
        for bad in ["im.example.com", "ftp://x", "https://", "https://a b", "/x"] {
            assert_err(
                load_env(&[("WEIM_HTTP_PUBLIC_URL", bad)]),
                "http.public_url:",
                "https://im.example.com",
            );
        }
        for good in ["", "/a.png", "https://cdn.example.com/a.png", "http://x/y"] {
            let c = load_env(&[("WEIM_USER_DEFAULT_AVATAR", good)]).unwrap();
            assert_eq!(c.user.default_avatar, good);
        }
        for bad in ["a.png", "//cdn/a.png", "/a b.png", "ftp://x/a.png"] {
            assert_err(
                load_env(&[("WEIM_USER_DEFAULT_AVATAR", bad)]),
                "user.default_avatar:",
                "/public/avatar/default.png",
            );
        }
    }

    #[test]
    fn server_api_and_webhook_validation() {
        let c = load_env(&[(
            "WEIM_HTTP_SERVER_API_KEYS",
            "0123456789abcdef, fedcba9876543210",
        )])
        .unwrap();
        assert_eq!(c.http.server_api_keys.len(), 2);
        assert_err(
            load_env(&[("WEIM_HTTP_SERVER_API_KEYS", "0123456789abcdef,short")]),
            "http.server_api_keys:",
            "at least 16",
        );
        assert_err(
            load_env(&[("WEIM_WEBHOOK_URL", "http://backend/hook")]),
            "webhook.secret:",
            "required",
        );
        assert_err(
            load_env(&[
                ("WEIM_WEBHOOK_URL", "ftp://backend"),
                ("WEIM_WEBHOOK_SECRET", "s"),
            ]),
            "webhook.url:",
            "ftp://backend",
        );
        assert_err(
            load_env(&[("WEIM_WEBHOOK_EVENTS", "user.online,user.gone")]),
            "webhook.events:",
            "user.gone",
        );
        let c = load_env(&[
            ("WEIM_WEBHOOK_URL", "http://backend/hook"),
            ("WEIM_WEBHOOK_SECRET", "s"),
            ("WEIM_WEBHOOK_EVENTS", "message.offline"),
        ])
        .unwrap();
        assert_eq!(c.webhook.events, vec!["message.offline"]);
    }

    #[test]
    fn cluster_validation() {
        let full = [
            ("WEIM_CLUSTER_ENABLED", "true"),
            ("WEIM_CLUSTER_ETCD", "http://127.0.0.1:2379"),
            ("WEIM_CLUSTER_REDIS", "redis://127.0.0.1:6379"),
            ("WEIM_AUTH_JWT_SECRET", "shared"),
            ("WEIM_STORE_KIND", "mysql"),
            ("WEIM_STORE_MYSQL_URL", "mysql://root@127.0.0.1:3306/weim"),
            ("WEIM_ATTACH_SHARED", "true"),
        ];
        assert!(load_env(&full).is_ok());
        // Local attachments in a cluster: only on a directory declared
        // shared; the object store needs no declaration.
        let local = &full[..full.len() - 1];
        assert_err(load_env(local), "attach.kind:", "attach.shared: true");
        let mut s3 = local.to_vec();
        s3.extend([
            ("WEIM_ATTACH_KIND", "s3"),
            ("WEIM_ATTACH_S3_ENDPOINT", "http://s3"),
            ("WEIM_ATTACH_S3_BUCKET", "b"),
            ("WEIM_ATTACH_S3_ACCESS_KEY", "a"),
            ("WEIM_ATTACH_S3_SECRET_KEY", "s"),
        ]);
        assert!(load_env(&s3).is_ok());
        for (drop, name) in [
            (1, "cluster.etcd"),
            (2, "cluster.redis"),
            (3, "auth.jwt_secret"),
            (4, "store.kind: mysql"),
        ] {
            let mut vars = full.to_vec();
            vars.remove(drop);
            let err = load_env(&vars).unwrap_err();
            assert!(err.starts_with("cluster.enabled:"), "{err}");
            assert!(err.contains(&format!("missing {name}")), "{err}");
        }
        assert_err(
            load_env(&[("WEIM_CLUSTER_ENABLED", "true")]),
            "cluster.enabled:",
            "missing cluster.etcd, cluster.redis, auth.jwt_secret, store.kind: mysql",
        );
        // An empty list or secret counts as missing.
        let mut vars = full.to_vec();
        vars.push(("WEIM_CLUSTER_ETCD", " , "));
        vars.remove(1);
        assert_err(load_env(&vars), "cluster.enabled:", "cluster.etcd");
        // Disabled: nothing required.
        assert!(load_env(&[("WEIM_CLUSTER_ENABLED", "false")]).is_ok());
        // A node id becomes part of keys and channel names.
        let mut vars = full.to_vec();
        vars.push(("WEIM_CLUSTER_NODE_ID", "n1.a-b_c"));
        assert!(load_env(&vars).is_ok());
        let long = "x".repeat(65);
        let mut vars = full.to_vec();
        vars.push(("WEIM_CLUSTER_LEASE_TTL", "1500ms"));
        assert_err(load_env(&vars), "cluster.lease_ttl:", "at least 2s");
        for bad in ["a b", "a/b", "a:b", long.as_str()] {
            let mut vars = full.to_vec();
            vars.push(("WEIM_CLUSTER_NODE_ID", bad));
            assert_err(load_env(&vars), "cluster.node_id:", "must be");
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("15s", Duration::from_secs(15)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("30", Duration::from_secs(30)),
            (" 10s ", Duration::from_secs(10)),
            ("10 s", Duration::from_secs(10)),
            ("0", Duration::ZERO),
            ("36500d", MAX_DURATION),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s:?}");
        }
        for s in [
            "",
            "s",
            "-1s",
            "+1s",
            "1.5s",
            "1x",
            "1S",
            "1 h 2m",
            "1h30m",
            "abc",
            "99999999999999999999",
            "36501d",
            "18446744073709551615d",
        ] {
            assert!(parse_duration(s).is_err(), "{s:?}");
        }
        assert_eq!(
            parse_duration("soon").unwrap_err(),
            "expected a duration like 15s, 500ms, 2m, 1h or 7d, got \"soon\""
        );
    }

    #[test]
    fn sizes() {
        let ok = [
            ("65536", 65536),
            ("64KiB", 64 << 10),
            ("64KB", 64 << 10),
            ("64k", 64 << 10),
            ("64K", 64 << 10),
            ("1MiB", 1 << 20),
            ("1M", 1 << 20),
            ("1mb", 1 << 20),
            ("1GiB", 1 << 30),
            ("1g", 1 << 30),
            ("100B", 100),
            (" 2 MiB ", 2 << 20),
            ("0", 0),
        ];
        for (s, n) in ok {
            assert_eq!(parse_size(s), Ok(n), "{s:?}");
        }
        for s in [
            "",
            "KiB",
            "-1",
            "+1",
            "1.5MiB",
            "1TiB",
            "1 x",
            "lots",
            "99999999999999999999",
            "18446744073709551615GiB",
        ] {
            assert!(parse_size(s).is_err(), "{s:?}");
        }
        assert_eq!(
            parse_size("lots").unwrap_err(),
            "expected a size like 65536, 64KiB or 1MiB, got \"lots\""
        );
    }

    #[test]
    fn shipped_config_yml_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yml");
        let loaded = Config::load(Some(&path), env(&[])).unwrap();
        let defaults = Config::load(None, env(&[])).unwrap();
        assert!(
            same(&loaded, &defaults),
            "config.yml differs from the defaults:\n{loaded:#?}\n{defaults:#?}"
        );
        assert_eq!(loaded.http.admin_token, None);
        assert_eq!(loaded.auth.jwt_secret, None);
        // The echo endpoint is a test aid: never on as shipped.
        assert_eq!(loaded.ws.echo_path, "");
        assert_eq!(loaded.store.sqlite_path, PathBuf::from("./data/weim.db"));

        // Every key is written out explicitly.
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        for key in KEYS {
            assert!(
                doc.get(key.section).and_then(|s| s.get(key.name)).is_some(),
                "config.yml lacks {}",
                key.path()
            );
        }
    }
}
