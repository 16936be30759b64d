//! Configuration: command-line flags, `LOCKSTEP_*` environment variables and an
//! optional TOML file (`--config`), in that order of precedence. Unknown keys
//! in the file are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use lockstep_protocol::{ClockKind, ControlPolicy};
use serde::{Deserialize, Serialize};

pub use crate::edge::{CorsOrigins, TrustedProxies};
use crate::room::{BufferingPolicy, LiveLatency, RoomConfig};

pub mod show;

/// Lockstep: keeps video playback in lockstep across every viewer.
#[derive(Debug, Parser)]
#[command(name = "lockstep", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Write a self-signed development certificate and key (`cert.pem`, `key.pem`) for `serve --cert --key`.
    Cert(CertArgs),
    /// Mint an access token with the configured HS256 secret (for operators, tests and the demo).
    Token(Box<TokenArgs>),
    /// Check a configuration, or print an example one.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `lockstep config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration (`--config` file, flags and `LOCKSTEP_*` variables, as `serve` reads them) and
    /// print the effective one as TOML, secrets masked; exits non-zero with the reason when it is invalid.
    Check(Box<ServeArgs>),
    /// Print a commented TOML file with every `serve` option at its default.
    Example,
}

/// Options of `lockstep token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// The plan.
    #[arg(long, value_enum, default_value = "free")]
    pub plan: PlanArg,
    /// Lifetime: seconds, or with a unit: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// A per-user device limit (`max_devices`).
    #[arg(long)]
    pub max_devices: Option<u32>,
    /// Event ids this user hosts (`host_of`); repeat for several.
    #[arg(long)]
    pub host_of: Vec<String>,
    /// Where the secret and claims settings come from (as for `serve`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// A plan as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanArg {
    /// Free.
    Free,
    /// Premium.
    Premium,
}

impl From<PlanArg> for crate::auth::Plan {
    fn from(p: PlanArg) -> Self {
        match p {
            PlanArg::Free => crate::auth::Plan::Free,
            PlanArg::Premium => crate::auth::Plan::Premium,
        }
    }
}

/// Parses `3600`, `90s`, `30m`, `1h` or `7d` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let (num, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid unit in {s:?}: use s, m, h or d")),
    };
    n.checked_mul(mult).filter(|&v| v > 0).ok_or_else(|| format!("invalid duration {s:?}"))
}

/// Options of `lockstep cert`.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// Directory to write `cert.pem` and `key.pem` into (created if missing; existing files are replaced).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Extra subject alternative names (host names or IP addresses) besides localhost, 127.0.0.1 and ::1.
    #[arg(long)]
    pub san: Vec<String>,
}

/// Declares the serve options once: each becomes an optional clap flag with a
/// `LOCKSTEP_*` variable, a TOML key, and a field of [`Config`] with a default.
///
/// Options after `@optional` have no default: they are `None` unless given.
macro_rules! serve_options {
    (
        $( $(#[$doc:meta])* $field:ident : $ty:ty = $default:expr, $env:literal; )*
        @optional
        $( $(#[$odoc:meta])* $ofield:ident : $oty:ty, $oenv:literal; )*
    ) => {
        /// Options of `lockstep serve`.
        #[derive(Debug, Default, Args, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct ServeArgs {
            /// A TOML file with any of these options (flags and variables win).
            #[arg(long, env = "LOCKSTEP_CONFIG")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            /// Log as JSON lines.
            #[arg(long, env = "LOCKSTEP_LOG_JSON")]
            #[serde(default)]
            pub log_json: bool,
            /// Development mode: anonymous demo users and `POST /api/dev/token`. Never in production.
            #[arg(long, env = "LOCKSTEP_DEV")]
            #[serde(default)]
            pub dev: bool,
            /// Serve the development live source (`/dev/live-source/stream.m3u8`, made with ffmpeg) without
            /// `--dev` (which serves it too).
            #[arg(long, env = "LOCKSTEP_LIVE_SOURCE")]
            #[serde(default)]
            pub live_source: bool,
            $( $(#[$doc])* #[arg(long, env = $env)] pub $field: Option<$ty>, )*
            $( $(#[$odoc])* #[arg(long, env = $oenv)] pub $ofield: Option<$oty>, )*
        }

        /// The effective server configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            /// Log as JSON lines.
            pub log_json: bool,
            /// Development mode (anonymous users, dev tokens, the live source).
            pub dev: bool,
            /// Serve the development live source even without `dev`.
            pub live_source: bool,
            $( $(#[$doc])* pub $field: $ty, )*
            $( $(#[$odoc])* pub $ofield: Option<$oty>, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { log_json: false, dev: false, live_source: false, $( $field: $default, )* $( $ofield: None, )* }
            }
        }

        impl Config {
            /// Every option as its TOML key and value (`None`: unset), in declaration order;
            /// secret values are masked ([`show::SECRETS`]).
            pub fn entries(&self) -> Vec<(&'static str, Option<toml::Value>)> {
                vec![
                    ("log_json", show::value(&self.log_json)),
                    ("dev", show::value(&self.dev)),
                    ("live_source", show::value(&self.live_source)),
                    $( (stringify!($field), show::value(&self.$field)), )*
                    $( (stringify!($ofield), self.$ofield.as_ref().and_then(show::value)), )*
                ]
                .into_iter()
                .map(|(k, v)| (k, v.map(|v| show::mask(k, v))))
                .collect()
            }
        }

        impl ServeArgs {
            /// Merges flags and variables over the file over the defaults.
            pub fn resolve(self) -> Result<Config, ConfigError> {
                let file = match &self.config {
                    Some(path) => load_file(path)?,
                    None => ServeArgs::default(),
                };
                let d = Config::default();
                let cfg = Config {
                    log_json: self.log_json || file.log_json,
                    dev: self.dev || file.dev,
                    live_source: self.live_source || file.live_source,
                    $( $field: self.$field.or(file.$field).unwrap_or(d.$field), )*
                    $( $ofield: self.$ofield.or(file.$ofield), )*
                };
                cfg.check()?;
                Ok(cfg)
            }
        }
    };
}

serve_options! {
    /// HTTP and WebSocket listen address.
    http_addr: SocketAddr = ([127, 0, 0, 1], 8080).into(), "LOCKSTEP_HTTP_ADDR";
    /// Milliseconds between periodic ticks.
    tick_interval_ms: u64 = 250, "LOCKSTEP_TICK_INTERVAL_MS";
    /// Milliseconds between a play/pause command and its effect.
    lead_ms: u64 = 100, "LOCKSTEP_LEAD_MS";
    /// The most the lead grows to, ms, for the room's members' round trips
    /// (their 95th percentile); at or below --lead-ms the lead stays fixed.
    lead_max_ms: u64 = 1000, "LOCKSTEP_LEAD_MAX_MS";
    /// Who may change a room's timeline: host-only or everyone.
    control_policy: ControlPolicyArg = ControlPolicyArg::HostOnly, "LOCKSTEP_CONTROL_POLICY";
    /// What a room does when a member stalls: wait or ignore.
    buffering_policy: BufferingPolicy = BufferingPolicy::Wait, "LOCKSTEP_BUFFERING_POLICY";
    /// Timeline changes members may make per second in one room (burst as many; more are held and
    /// coalesced); 0: unlimited.
    room_changes_per_sec: u32 = 10, "LOCKSTEP_ROOM_CHANGES_PER_SEC";
    /// Longest buffering wait, in milliseconds.
    buffering_wait_max_ms: u64 = 3_000, "LOCKSTEP_BUFFERING_WAIT_MAX_MS";
    /// Which stalls make a room wait: a comma-separated list of buffering, seeking, interstitial,
    /// userActionRequired, custom:<name>, custom:* (empty: none).
    wait_reasons: WaitReasonsArg = WaitReasonsArg::default(), "LOCKSTEP_WAIT_REASONS";
    /// Above this many viewers a room never waits for a stalled member.
    wait_max_members: u32 = 100, "LOCKSTEP_WAIT_MAX_MEMBERS";
    /// How long after a switch to another media item a playing room starts it, in milliseconds
    /// (every member loads it meanwhile).
    media_start_ms: u64 = 1_500, "LOCKSTEP_MEDIA_START_MS";
    /// Chat messages a joiner gets replayed (the room's newest; at most 1000).
    chat_history: u32 = 100, "LOCKSTEP_CHAT_HISTORY";
    /// Longest chat message, in bytes of UTF-8 (1-1000).
    chat_max_bytes: u32 = 500, "LOCKSTEP_CHAT_MAX_BYTES";
    /// Chat messages one room takes per second (bursts of twice as many; a member sends at most 1 a
    /// second, bursts of 5; at most 100000); 0: chat is off.
    chat_room_rate: u32 = 20, "LOCKSTEP_CHAT_ROOM_RATE";
    /// Shortest interval between viewer-count messages, in milliseconds.
    count_interval_ms: u64 = 250, "LOCKSTEP_COUNT_INTERVAL_MS";
    /// Whether members see each other join and leave.
    show_members: bool = false, "LOCKSTEP_SHOW_MEMBERS";
    /// How long a departed host keeps the role, in milliseconds.
    host_grace_ms: u64 = 30_000, "LOCKSTEP_HOST_GRACE_MS";
    /// How long an empty room is kept, in milliseconds.
    room_grace_ms: u64 = 60_000, "LOCKSTEP_ROOM_GRACE_MS";
    /// Most concurrent connections.
    max_connections: usize = 20_000, "LOCKSTEP_MAX_CONNECTIONS";
    /// Sustained messages per second one connection may send.
    msgs_per_sec: u32 = 50, "LOCKSTEP_MSGS_PER_SEC";
    /// Burst of messages one connection may send.
    msg_burst: u32 = 100, "LOCKSTEP_MSG_BURST";
    /// Reliable messages queued for one connection before it is closed as slow.
    control_queue: usize = 256, "LOCKSTEP_CONTROL_QUEUE";
    /// Milliseconds a new connection has to send Hello.
    hello_timeout_ms: u64 = 10_000, "LOCKSTEP_HELLO_TIMEOUT_MS";
    /// Milliseconds without anything from a client before it is closed.
    idle_timeout_ms: u64 = 45_000, "LOCKSTEP_IDLE_TIMEOUT_MS";
    /// WebTransport (QUIC, UDP) listen address; `[::]` is dual stack (IPv4 and IPv6).
    quic_addr: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, 4433).into(), "LOCKSTEP_QUIC_ADDR";
    /// How often to check `--cert`/`--key` for changes, in milliseconds (SIGHUP reloads at once).
    cert_poll_ms: u64 = 5_000, "LOCKSTEP_CERT_POLL_MS";
    /// At shutdown (SIGTERM, Ctrl-C), how long the node keeps serving its viewers while `/api/ready` answers
    /// 503, so load balancers take it out of rotation before its sessions are moved, in milliseconds (cut
    /// short when no connection is left); then every session is closed with ShuttingDown and reconnects
    /// elsewhere.
    drain_ms: u64 = 5_000, "LOCKSTEP_DRAIN_MS";
    /// Directory of the embedded database (SQLite, WAL).
    data_dir: PathBuf = PathBuf::from("data"), "LOCKSTEP_DATA_DIR";
    /// Devices a free account may use at once (a `max_devices` claim overrides it).
    max_devices_free: u32 = 1, "LOCKSTEP_MAX_DEVICES_FREE";
    /// Devices a premium account may use at once (a `max_devices` claim overrides it).
    max_devices_premium: u32 = 4, "LOCKSTEP_MAX_DEVICES_PREMIUM";
    /// A viewing session without heartbeat or realtime activity expires after this many milliseconds.
    session_idle_ms: u64 = 120_000, "LOCKSTEP_SESSION_IDLE_MS";
    /// How often the JWKS of --jwt-jwks-url is fetched again, in milliseconds (also on a token's unknown `kid`,
    /// at most every 10 s).
    jwt_jwks_refresh_ms: u64 = 300_000, "LOCKSTEP_JWT_JWKS_REFRESH_MS";
    /// Whether the first member hosts an event room when no member has a `host_of` claim for it.
    first_joiner_hosts: bool = true, "LOCKSTEP_FIRST_JOINER_HOSTS";
    /// REST requests per second per client IP (429 with Retry-After beyond).
    rest_per_ip_per_sec: u32 = 50, "LOCKSTEP_REST_PER_IP_PER_SEC";
    /// REST request burst per client IP.
    rest_burst: u32 = 100, "LOCKSTEP_REST_BURST";
    /// Realtime connection attempts per second per client IP (WebSocket and WebTransport).
    connects_per_ip_per_sec: u32 = 20, "LOCKSTEP_CONNECTS_PER_IP_PER_SEC";
    /// Realtime connection attempt burst per client IP.
    connect_burst: u32 = 200, "LOCKSTEP_CONNECT_BURST";
    /// Browser origins (`https://www.example.com`, comma-separated; an array in TOML) whose pages may call the
    /// REST API (CORS) and open WebSockets; `*` (any) only with --dev. Unset: no CORS headers, any origin may
    /// open a WebSocket.
    cors_origins: CorsOrigins = CorsOrigins::default(), "LOCKSTEP_CORS_ORIGINS";
    /// Proxies and load balancers (CIDRs, comma-separated: `10.0.0.0/8,::1/128`) whose X-Forwarded-For or
    /// Forwarded header (and PROXY header) gives the client's address, for per-IP limits and logs.
    trusted_proxies: TrustedProxies = TrustedProxies::default(), "LOCKSTEP_TRUSTED_PROXIES";
    /// Every TCP connection starts with a PROXY protocol header (v2 or v1) from a --trusted-proxies peer; its
    /// source is the client. Other connections are closed.
    proxy_protocol: bool = false, "LOCKSTEP_PROXY_PROTOCOL";
    /// Serve HTTPS and wss:// on --http-addr with the --cert/--key certificate (the generated one without them),
    /// reloaded like the WebTransport one.
    http_tls: bool = false, "LOCKSTEP_HTTP_TLS";
    /// What new rooms' positions measure: `media` (media time) or `live` (program time of a live stream;
    /// rooms start at the live point).
    room_clock: ClockArg = ClockArg::Media, "LOCKSTEP_ROOM_CLOCK";
    /// Live rooms: latency behind the live edge in milliseconds, or `auto` (picked from the viewers' reports
    /// within --live-latency-min-ms and --live-latency-max-ms).
    live_latency_ms: LatencyArg = LatencyArg::Fixed(3_000), "LOCKSTEP_LIVE_LATENCY_MS";
    /// Live rooms with `auto` latency: the lowest latency, in milliseconds.
    live_latency_min_ms: u32 = 1_000, "LOCKSTEP_LIVE_LATENCY_MIN_MS";
    /// Live rooms with `auto` latency: the highest latency, in milliseconds.
    live_latency_max_ms: u32 = 30_000, "LOCKSTEP_LIVE_LATENCY_MAX_MS";
    /// Live rooms: the streams' DVR window in milliseconds; seeks further back than this behind the live point
    /// clamp to its start (0: no bound). A room's own is set with `PUT /api/live-stream/{id}/clock`.
    live_dvr_window_ms: u32 = 0, "LOCKSTEP_LIVE_DVR_WINDOW_MS";
    /// The ffmpeg the live source makes its loop with (a path, or a name looked up in PATH).
    live_source_ffmpeg: PathBuf = PathBuf::from("ffmpeg"), "LOCKSTEP_LIVE_SOURCE_FFMPEG";
    /// Where the live source keeps the loops it made (one directory per ffmpeg version and command).
    live_source_cache: PathBuf = std::env::temp_dir().join("lockstep-live-source"), "LOCKSTEP_LIVE_SOURCE_CACHE";
    @optional
    /// HS256 secret of the platform's tokens (prefer the variable or --jwt-secret-file to a flag).
    jwt_secret: String, "LOCKSTEP_JWT_SECRET";
    /// A file holding the HS256 secret.
    jwt_secret_file: PathBuf, "LOCKSTEP_JWT_SECRET_FILE";
    /// A PEM public key (RSA for RS256, EC P-256 for ES256) to verify tokens with; repeat the flag (or separate
    /// paths with commas) for several: a token is accepted if one of them verifies it.
    jwt_public_key: Vec<PathBuf>, "LOCKSTEP_JWT_PUBLIC_KEY";
    /// Required `aud` claim.
    jwt_audience: String, "LOCKSTEP_JWT_AUDIENCE";
    /// Required `iss` claim.
    jwt_issuer: String, "LOCKSTEP_JWT_ISSUER";
    /// The identity provider's JWKS URL (http or https): RS256 and ES256 keys picked by the token's `kid`, fetched
    /// at start and refreshed (see --jwt-jwks-refresh-ms); combines with a secret and public key files.
    jwt_jwks_url: String, "LOCKSTEP_JWT_JWKS_URL";
    /// TLS certificate chain (PEM) for WebTransport; without it a self-signed one is generated and rotated.
    cert: PathBuf, "LOCKSTEP_CERT";
    /// Private key (PEM: PKCS#8, SEC1 or PKCS#1) of `--cert`.
    key: PathBuf, "LOCKSTEP_KEY";
    /// An address for operators (`127.0.0.1:9090`): `/metrics`, room state and the OpenAPI document move
    /// there from the public port; `/api/health` and `/api/ready` are served on both.
    admin_addr: SocketAddr, "LOCKSTEP_ADMIN_ADDR";
    /// Redis URL (`redis://host:6379/0`): several nodes share sessions, invitations and room timelines and
    /// fan out to each other's viewers; without it, state is embedded (SQLite) and the node stands alone.
    redis_url: String, "LOCKSTEP_REDIS_URL";
    /// The public base URL of this service's HTTP side (`https://sync.platform.example`, a path prefix allowed):
    /// what the session API's WebSocket URLs and invitation links announce; without it, the request's Host.
    public_url: String, "LOCKSTEP_PUBLIC_URL";
    /// The public WebTransport URL (`https://sync.platform.example:443`) that the session API and
    /// `/api/certificate` announce (a node behind NAT or a UDP load balancer); without it, the --public-url host
    /// (or the request's Host) at the bound QUIC port.
    public_webtransport_url: String, "LOCKSTEP_PUBLIC_WEBTRANSPORT_URL";
    /// CA certificates (PEM) that a `rediss://` Redis server's certificate must chain to, instead of the
    /// system's roots (a private CA).
    redis_ca: PathBuf, "LOCKSTEP_REDIS_CA";
}

/// `BufferingPolicy` as a flag value (the room core knows nothing of clap):
/// `--buffering-policy wait|ignore` parses through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BufferingPolicyArg {
    /// Pause everyone until the member recovers or the wait times out.
    Wait,
    /// Carry on; the member catches up alone.
    Ignore,
}

impl From<BufferingPolicyArg> for BufferingPolicy {
    fn from(p: BufferingPolicyArg) -> Self {
        match p {
            BufferingPolicyArg::Wait => BufferingPolicy::Wait,
            BufferingPolicyArg::Ignore => BufferingPolicy::Ignore,
        }
    }
}

impl clap::builder::ValueParserFactory for BufferingPolicy {
    type Parser = clap::builder::MapValueParser<
        clap::builder::EnumValueParser<BufferingPolicyArg>,
        fn(BufferingPolicyArg) -> BufferingPolicy,
    >;

    fn value_parser() -> Self::Parser {
        use clap::builder::TypedValueParser;
        clap::builder::EnumValueParser::<BufferingPolicyArg>::new().map(BufferingPolicy::from)
    }
}

/// `ControlPolicy` as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ControlPolicyArg {
    /// Host and co-hosts only.
    HostOnly,
    /// Every member.
    Everyone,
}

impl From<ControlPolicyArg> for ControlPolicy {
    fn from(p: ControlPolicyArg) -> Self {
        match p {
            ControlPolicyArg::HostOnly => ControlPolicy::HostOnly,
            ControlPolicyArg::Everyone => ControlPolicy::Everyone,
        }
    }
}

/// `ClockKind` as a flag value: `--room-clock media|live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClockArg {
    /// Media time (watch parties over a file).
    Media,
    /// Program time of a live stream.
    Live,
}

impl From<ClockArg> for ClockKind {
    fn from(c: ClockArg) -> Self {
        match c {
            ClockArg::Media => ClockKind::Media,
            ClockArg::Live => ClockKind::Live,
        }
    }
}

/// `--wait-reasons`: a comma-separated list of suspension reasons
/// ([`crate::room::WaitReasons`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct WaitReasonsArg(pub crate::room::WaitReasons);

impl std::str::FromStr for WaitReasonsArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(WaitReasonsArg)
    }
}

impl TryFrom<String> for WaitReasonsArg {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl serde::Serialize for WaitReasonsArg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// `--live-latency-ms`: a number of milliseconds, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum LatencyArg {
    /// This many milliseconds.
    Fixed(u32),
    /// Picked from the viewers' reports.
    Auto,
}

impl std::str::FromStr for LatencyArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(LatencyArg::Auto),
            n => n.parse().map(LatencyArg::Fixed).map_err(|_| format!("{s:?} is neither a number of ms nor `auto`")),
        }
    }
}

impl serde::Serialize for LatencyArg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LatencyArg::Fixed(ms) => s.serialize_u32(*ms),
            LatencyArg::Auto => s.serialize_str("auto"),
        }
    }
}

impl TryFrom<toml::Value> for LatencyArg {
    type Error = String;

    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) => u32::try_from(n).map(LatencyArg::Fixed).map_err(|e| e.to_string()),
            toml::Value::String(s) => s.parse(),
            other => Err(format!("{other:?} is neither a number of ms nor \"auto\"")),
        }
    }
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these options.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// Options that contradict each other.
    #[error("{0}")]
    Invalid(&'static str),
    /// The token key is unusable.
    #[error("{0}")]
    Auth(String),
    /// An option's value is unusable (the message names the option).
    #[error("{0}")]
    Value(String),
}

/// Options that take a list; in a file, one value may also be written alone
/// (`jwt-public-key = "a.pem"`, as before the option took several).
const LIST_KEYS: &[&str] = &["jwt-public-key"];

fn load_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    let parse_err = |source| ConfigError::Parse { path: path.into(), source: Box::new(source) };
    let mut table: toml::Table = toml::from_str(&text).map_err(parse_err)?;
    for key in LIST_KEYS {
        if let Some(one @ toml::Value::String(_)) = table.get(*key) {
            let list = toml::Value::Array(vec![one.clone()]);
            table.insert((*key).to_owned(), list);
        }
    }
    ServeArgs::deserialize(table).map_err(parse_err)
}

impl Config {
    /// Checks options that depend on each other.
    fn check(&self) -> Result<(), ConfigError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::Invalid("--cert and --key must be given together"));
        }
        if self.admin_addr.is_some_and(|a| a == self.http_addr && a.port() != 0) {
            return Err(ConfigError::Invalid("--admin-addr must differ from --http-addr"));
        }
        if self.chat_history as usize > crate::authority::CHAT_LOADED {
            return Err(ConfigError::Invalid("--chat-history is at most 1000"));
        }
        if !(1..=lockstep_protocol::limits::MAX_CHAT_TEXT as u32).contains(&self.chat_max_bytes) {
            return Err(ConfigError::Invalid("--chat-max-bytes must be 1-1000"));
        }
        // Scaled out, a room's chat ids grow by one a message from a number taken from the clock in µs: a
        // room must take far fewer than a million a second for ids taken after a data loss to be new.
        if self.chat_room_rate > 100_000 {
            return Err(ConfigError::Invalid("--chat-room-rate is at most 100000 (0: chat off)"));
        }
        if self.lead_max_ms > 10_000 {
            return Err(ConfigError::Invalid("--lead-max-ms is at most 10000"));
        }
        if self.live_latency_min_ms > self.live_latency_max_ms {
            return Err(ConfigError::Invalid("--live-latency-min-ms is above --live-latency-max-ms"));
        }
        if self.cors_origins.is_any() && !self.dev {
            return Err(ConfigError::Invalid(
                "--cors-origins '*' (any origin) is only allowed with --dev; list the origins of your pages \
                 (https://www.example.com,https://app.example.com)",
            ));
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err(ConfigError::Invalid(
                "--proxy-protocol needs --trusted-proxies: the addresses of the load balancers that send PROXY headers",
            ));
        }
        self.public_urls()?;
        if let Some(url) = &self.redis_url {
            let tls = url.trim_start().starts_with("rediss://");
            if self.redis_ca.is_some() && !tls {
                return Err(ConfigError::Invalid("--redis-ca needs a rediss:// --redis-url (Redis over TLS)"));
            }
            if tls && url.contains('#') {
                return Err(ConfigError::Invalid(
                    "--redis-url: rediss://…#insecure (no certificate check) is not supported; give the server's CA \
                     with --redis-ca",
                ));
            }
        } else if self.redis_ca.is_some() {
            return Err(ConfigError::Invalid("--redis-ca needs a rediss:// --redis-url"));
        }
        Ok(())
    }

    /// The public addresses (`--public-url`, `--public-webtransport-url`), checked.
    pub(crate) fn public_urls(&self) -> Result<crate::util::PublicUrls, ConfigError> {
        crate::util::PublicUrls::new(self.public_url.as_deref(), self.public_webtransport_url.as_deref())
            .map_err(ConfigError::Value)
    }

    /// The token verifier: a secret (flag, variable or file), public key
    /// files and a JWKS URL, any of them together; in dev mode without any, a
    /// random per-process secret.
    pub fn authenticator(&self) -> Result<crate::auth::Authenticator, ConfigError> {
        use crate::auth::{Authenticator, Jwks, Keys};
        let secret = if let Some(secret) = &self.jwt_secret {
            Some(secret.as_bytes().to_vec())
        } else if let Some(path) = &self.jwt_secret_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            Some(text.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
        } else {
            None
        };
        // Each value may hold several paths separated by commas (one variable, several keys).
        let public_keys: Vec<PathBuf> = self
            .jwt_public_key
            .iter()
            .flatten()
            .flat_map(|p| {
                p.to_str().map(|s| s.split(',').map(PathBuf::from).collect()).unwrap_or_else(|| vec![p.clone()])
            })
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let jwks = match &self.jwt_jwks_url {
            Some(url) => Some(
                Jwks::new(url, std::time::Duration::from_millis(self.jwt_jwks_refresh_ms))
                    .map_err(ConfigError::Auth)?,
            ),
            None => None,
        };
        let secret = match secret {
            None if public_keys.is_empty() && jwks.is_none() => {
                if !self.dev {
                    return Err(ConfigError::Invalid(
                        "no token key: set LOCKSTEP_JWT_SECRET, --jwt-secret-file, --jwt-public-key or --jwt-jwks-url (or run with --dev)",
                    ));
                }
                Some(crate::store::random_id().into_bytes())
            }
            s => s,
        };
        Authenticator::with_keys(
            Keys { secret, public_keys, jwks },
            self.jwt_audience.clone(),
            self.jwt_issuer.clone(),
            self.dev,
        )
        .map_err(|e| ConfigError::Auth(e.to_string()))
    }

    /// Everything `serve` would refuse at start that can be checked without
    /// binding or connecting: the options ([`ServeArgs::resolve`] checked
    /// those), the token key, and the certificate and key files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.authenticator()?;
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            crate::cert::check_files(cert, key).map_err(|e| ConfigError::Auth(format!("--cert/--key: {e}")))?;
        }
        Ok(())
    }

    /// Whether the development live source is served (`--dev` or `--live-source`).
    pub fn live_source_enabled(&self) -> bool {
        self.dev || self.live_source
    }

    /// Room settings derived from this configuration.
    pub fn room_config(&self) -> RoomConfig {
        let d = RoomConfig::default();
        RoomConfig {
            lead_us: self.lead_ms * 1000,
            lead_max_us: self.lead_max_ms * 1000,
            policy: self.control_policy.into(),
            buffering: self.buffering_policy,
            buffering_wait_max_us: self.buffering_wait_max_ms * 1000,
            wait_reasons: self.wait_reasons.0.clone(),
            wait_max_members: self.wait_max_members,
            count_interval_us: self.count_interval_ms * 1000,
            tick_interval_us: self.tick_interval_ms.max(10) * 1000,
            show_members: self.show_members,
            host_grace_us: self.host_grace_ms * 1000,
            first_joiner_hosts: self.first_joiner_hosts,
            changes_per_sec: self.room_changes_per_sec,
            limits: lockstep_protocol::Limits {
                max_msgs_per_sec: self.msgs_per_sec,
                tick_interval_ms: self.tick_interval_ms as u32,
                ..d.limits
            },
            clock: self.room_clock.into(),
            live_latency: match self.live_latency_ms {
                LatencyArg::Fixed(latency_ms) => LiveLatency::Fixed { latency_ms },
                LatencyArg::Auto => {
                    LiveLatency::Auto { min_ms: self.live_latency_min_ms, max_ms: self.live_latency_max_ms }
                }
            },
            live_latency_range_ms: (self.live_latency_min_ms, self.live_latency_max_ms),
            live_dvr_window_ms: self.live_dvr_window_ms,
            media_start_us: self.media_start_ms * 1000,
            chat_history: self.chat_history,
            chat_max_bytes: self.chat_max_bytes,
            chat_room_per_sec: self.chat_room_rate,
            ..d
        }
    }
}

#[cfg(test)]
mod tests;
