//! The `[cluster]` section: how the node joins its cluster, validated into [`ClusterSettings`].
//! No section runs the node alone, exactly as without a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchyard_actors::cluster::membership::MembershipSettings;
use switchyard_actors::cluster::tls::{self, ClusterTls, TlsFiles};
use switchyard_actors::pipeline::ClusterSettings;

use super::{ConfigError, at_least_one, invalid, positive, secret_from_env_or_file};

/// `[cluster]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    /// Unique in the cluster; empty = the host name.
    #[serde(default)]
    node_name: String,
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    /// `host` or `host:port` peers dial; empty = the listen address, or the host name when
    /// listening on every interface.
    #[serde(default)]
    advertise: String,
    #[serde(default)]
    cookie_env: Option<String>,
    #[serde(default)]
    cookie_file: Option<PathBuf>,
    #[serde(default)]
    seeds: Vec<String>,
    #[serde(default = "default_discovery_interval", with = "humantime_serde")]
    discovery_interval: Duration,
    #[serde(default = "default_replication")]
    replication: usize,
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    heartbeat_interval: Duration,
    #[serde(default = "default_down_after", with = "humantime_serde")]
    down_after: Duration,
    #[serde(default = "default_remote_lookup_timeout", with = "humantime_serde")]
    remote_lookup_timeout: Duration,
    #[serde(default = "default_handoff_grace", with = "humantime_serde")]
    handoff_grace: Duration,
    #[serde(default = "default_max_frame_bytes")]
    max_frame_bytes: u64,
    /// `[cluster.tls]`: mutual TLS between nodes; absent = plain TCP (the cookie still
    /// authenticates).
    #[serde(default)]
    tls: Option<RawTls>,
}

/// `[cluster.tls]` as written: PEM files (see `deploy/cluster-certs.sh`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: PathBuf,
    #[serde(default = "default_server_name")]
    server_name: String,
}

fn default_server_name() -> String {
    tls::DEFAULT_SERVER_NAME.to_owned()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7946))
}
fn default_discovery_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_replication() -> usize {
    2
}
fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_down_after() -> Duration {
    Duration::from_secs(3)
}
fn default_remote_lookup_timeout() -> Duration {
    Duration::from_millis(20)
}
fn default_handoff_grace() -> Duration {
    Duration::from_secs(30)
}
/// ractor_cluster's own default limit on one inbound frame: 16 MiB.
fn default_max_frame_bytes() -> u64 {
    16 * 1024 * 1024
}

/// The smallest frame limit that still carries a handoff chunk with room to spare.
const MIN_FRAME_BYTES: u64 = 4 * 1024 * 1024;

/// This machine's host name.
pub(super) fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Checks a `host:port` entry, naming `key`.
fn host_port(key: &str, entry: &str) -> Result<(String, u16), ConfigError> {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err(invalid(key, format!("\"{entry}\" is not host:port")));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| invalid(key, format!("\"{entry}\": \"{port}\" is not a port")))?;
    if host.is_empty() || host.contains(char::is_whitespace) || port == 0 {
        return Err(invalid(key, format!("\"{entry}\" is not host:port")));
    }
    Ok((host.to_owned(), port))
}

impl RawCluster {
    /// Checks every value and reads the cookie.
    pub(super) fn validate(&self) -> Result<ClusterSettings, ConfigError> {
        let node_name = if self.node_name.is_empty() {
            hostname().ok_or_else(|| invalid("cluster.node_name", "not set and the host name is unknown"))?
        } else {
            self.node_name.clone()
        };
        if node_name.contains(['@', ':']) || node_name.contains(char::is_whitespace) {
            return Err(invalid("cluster.node_name", format!("\"{node_name}\" must not contain '@', ':' or spaces")));
        }
        let advertise_host = if self.advertise.is_empty() {
            if self.listen.ip().is_unspecified() {
                hostname().ok_or_else(|| invalid("cluster.advertise", "not set, the listen address is unspecified and the host name is unknown"))?
            } else {
                self.listen.ip().to_string()
            }
        } else if self.advertise.starts_with('[') || self.advertise.matches(':').count() == 1 {
            // `host:port` or `[v6]:port`; otherwise a bare host (a name, or a v6 address).
            let (host, port) = host_port("cluster.advertise", &self.advertise)?;
            if port != self.listen.port() {
                return Err(invalid(
                    "cluster.advertise",
                    format!("port {port} differs from cluster.listen's {}: peers dial the advertised host on the listen port", self.listen.port()),
                ));
            }
            host
        } else {
            self.advertise.clone()
        };
        // Peers dial `host:port`: a v6 address goes in brackets there.
        let advertise_host = if advertise_host.contains(':') { format!("[{advertise_host}]") } else { advertise_host };
        if self.listen.port() == 0 {
            return Err(invalid("cluster.listen", "needs a fixed port: peers dial it"));
        }
        let cookie = secret_from_env_or_file("cluster", "cookie", self.cookie_env.as_deref(), self.cookie_file.as_deref())?
            .ok_or_else(|| invalid("cluster", "cookie_env or cookie_file is required: nodes authenticate with the cookie"))?;
        for (position, seed) in self.seeds.iter().enumerate() {
            host_port(&format!("cluster.seeds[{position}]"), seed)?;
        }
        at_least_one("cluster.replication", self.replication)?;
        let heartbeat_interval = positive("cluster.heartbeat_interval", self.heartbeat_interval)?;
        let down_after = positive("cluster.down_after", self.down_after)?;
        if down_after < heartbeat_interval.saturating_mul(2) {
            return Err(invalid("cluster.down_after", "must be at least twice cluster.heartbeat_interval, or one late heartbeat marks a member down"));
        }
        if self.max_frame_bytes < MIN_FRAME_BYTES {
            return Err(invalid("cluster.max_frame_bytes", format!("{} is below {MIN_FRAME_BYTES}, the least that carries a handoff chunk", self.max_frame_bytes)));
        }
        let tls = self
            .tls
            .as_ref()
            .map(|raw| {
                let files = TlsFiles { cert: raw.cert_file.clone(), key: raw.key_file.clone(), ca: raw.ca_file.clone(), server_name: raw.server_name.clone() };
                ClusterTls::load(&files).map_err(|error| invalid("cluster.tls", error.to_string()))
            })
            .transpose()?;
        Ok(ClusterSettings {
            membership: MembershipSettings {
                node_name,
                listen: self.listen,
                advertise_host,
                cookie,
                seeds: self.seeds.clone(),
                discovery_interval: positive("cluster.discovery_interval", self.discovery_interval)?,
                heartbeat_interval,
                down_after,
                max_frame_bytes: self.max_frame_bytes,
                tls,
            },
            replication: self.replication,
            remote_lookup_timeout: positive("cluster.remote_lookup_timeout", self.remote_lookup_timeout)?,
            handoff_grace: positive("cluster.handoff_grace", self.handoff_grace)?,
        })
    }
}
