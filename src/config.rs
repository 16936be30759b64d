//! Configuration: command-line flags, `LOCKSTEP_*` environment variables and an
//! optional TOML file (`--config`), in that order of precedence. Unknown keys
//! in the file are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use lockstep_protocol::ControlPolicy;
use serde::Deserialize;

use crate::room::{BufferingPolicy, RoomConfig};

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
            $( $(#[$doc])* #[arg(long, env = $env)] pub $field: Option<$ty>, )*
            $( $(#[$odoc])* #[arg(long, env = $oenv)] pub $ofield: Option<$oty>, )*
        }

        /// The effective server configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            /// Log as JSON lines.
            pub log_json: bool,
            $( $(#[$doc])* pub $field: $ty, )*
            $( $(#[$odoc])* pub $ofield: Option<$oty>, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { log_json: false, $( $field: $default, )* $( $ofield: None, )* }
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
    /// Who may change a room's timeline: host-only or everyone.
    control_policy: ControlPolicyArg = ControlPolicyArg::HostOnly, "LOCKSTEP_CONTROL_POLICY";
    /// What a room does when a member stalls: wait or ignore.
    buffering_policy: BufferingPolicy = BufferingPolicy::Wait, "LOCKSTEP_BUFFERING_POLICY";
    /// Longest buffering wait, in milliseconds.
    buffering_wait_max_ms: u64 = 3_000, "LOCKSTEP_BUFFERING_WAIT_MAX_MS";
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
    @optional
    /// TLS certificate chain (PEM) for WebTransport; without it a self-signed one is generated and rotated.
    cert: PathBuf, "LOCKSTEP_CERT";
    /// Private key (PEM: PKCS#8, SEC1 or PKCS#1) of `--cert`.
    key: PathBuf, "LOCKSTEP_KEY";
}

/// `ControlPolicy` as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
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
}

fn load_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
}

impl Config {
    /// Checks options that depend on each other.
    fn check(&self) -> Result<(), ConfigError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::Invalid("--cert and --key must be given together"));
        }
        Ok(())
    }

    /// Room settings derived from this configuration.
    pub fn room_config(&self) -> RoomConfig {
        let d = RoomConfig::default();
        RoomConfig {
            lead_us: self.lead_ms * 1000,
            policy: self.control_policy.into(),
            buffering: self.buffering_policy,
            buffering_wait_max_us: self.buffering_wait_max_ms * 1000,
            count_interval_us: self.count_interval_ms * 1000,
            tick_interval_us: self.tick_interval_ms.max(10) * 1000,
            show_members: self.show_members,
            host_grace_us: self.host_grace_ms * 1000,
            limits: lockstep_protocol::Limits {
                max_msgs_per_sec: self.msgs_per_sec,
                tick_interval_ms: self.tick_interval_ms as u32,
                ..d.limits
            },
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_overridden_by_flags_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("lockstep-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "lead-ms = 250\ntick-interval-ms = 100\nbuffering-policy = \"ignore\"\n").unwrap();
        let cli = Cli::parse_from(["lockstep", "serve", "--config", good.to_str().unwrap(), "--lead-ms", "50"]);
        let Command::Serve(args) = cli.command else { panic!("serve") };
        let cfg = args.resolve().unwrap();
        assert_eq!((cfg.lead_ms, cfg.tick_interval_ms), (50, 100));
        assert_eq!(cfg.buffering_policy, BufferingPolicy::Ignore);
        assert_eq!(cfg.http_addr, Config::default().http_addr);

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "lead-ms = 250\nno-such-key = 1\n").unwrap();
        let cli = Cli::parse_from(["lockstep", "serve", "--config", bad.to_str().unwrap()]);
        let Command::Serve(args) = cli.command else { panic!("serve") };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("no-such-key"), "{err}");
    }

    #[test]
    fn quic_and_certificate_options() {
        let cfg = Config::default();
        assert_eq!(cfg.quic_addr, "[::]:4433".parse().unwrap());
        assert!(cfg.cert.is_none() && cfg.key.is_none());
        let cli = Cli::parse_from(["lockstep", "serve", "--quic-addr", "[::1]:0", "--cert", "c.pem", "--key", "k.pem"]);
        let Command::Serve(args) = cli.command else { panic!("serve") };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.quic_addr, "[::1]:0".parse().unwrap());
        assert_eq!((cfg.cert.unwrap(), cfg.key.unwrap()), (PathBuf::from("c.pem"), PathBuf::from("k.pem")));
        let cli = Cli::parse_from(["lockstep", "serve", "--cert", "c.pem"]);
        let Command::Serve(args) = cli.command else { panic!("serve") };
        assert!(args.resolve().unwrap_err().to_string().contains("together"));
        let cli = Cli::parse_from(["lockstep", "cert", "--out", "/tmp/x", "--san", "lan.example"]);
        let Command::Cert(args) = cli.command else { panic!("cert") };
        assert_eq!((args.out, args.san), (PathBuf::from("/tmp/x"), vec!["lan.example".to_owned()]));
    }
}
