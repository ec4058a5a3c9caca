//! The `Membership` actor: one per node. It starts the node's `ractor_cluster` [`NodeServer`],
//! dials the seeds and every member it has heard of (heartbeats carry the addresses of the
//! sender's peers, so a node that reaches one member reaches them all), and decides who is
//! alive from heartbeats of its own. With [`ClusterTls`] every session is mutual TLS; without,
//! ractor's transitive connections add their own dials (they are plain TCP, so TLS turns them
//! off).
//!
//! ractor_cluster 0.16 ends a session only when its TCP connection fails (a missing pong is only
//! logged) and never redials, so:
//! - every `heartbeat_interval` each node casts a [`wire::Heartbeat`] to every other node's
//!   membership actor (found through the `pg` group [`wire::MEMBERSHIP_GROUP`]); a member not
//!   heard from for `down_after` is down, whatever its session says;
//! - a discovery task re-resolves the seeds every `discovery_interval` (a DNS name may resolve
//!   to many addresses: a Kubernetes headless Service) and redials every address without a
//!   session, with exponential backoff per address; a session that ends wakes it at once.
//!
//! The alive set (this node always among it) is published as a [`ClusterView`] on a
//! `tokio::sync::watch`, so the ring's users react to changes without asking the actor.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage, RactorClusterMessage};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::budget::period::now_ms;
use crate::cluster::tls::ClusterTls;
use crate::cluster::wire;
use crate::metrics::Metrics;

/// How a node joins its cluster, validated by the node's config loader.
#[derive(Clone, Debug)]
pub struct MembershipSettings {
    /// This node's name, unique in the cluster.
    pub node_name: String,
    /// Where the cluster listener binds.
    pub listen: std::net::SocketAddr,
    /// The host peers dial (its port is `listen`'s).
    pub advertise_host: String,
    /// The shared secret sessions authenticate with.
    pub cookie: String,
    /// `host:port` entries to dial; a name may resolve to many addresses.
    pub seeds: Vec<String>,
    /// How often the seeds are resolved again.
    pub discovery_interval: Duration,
    /// How often heartbeats go out.
    pub heartbeat_interval: Duration,
    /// A member not heard from for this long is down.
    pub down_after: Duration,
    /// Largest frame a peer may send (ractor_cluster drops the session past it).
    pub max_frame_bytes: u64,
    /// Mutual TLS between nodes, when configured.
    pub tls: Option<ClusterTls>,
}

impl MembershipSettings {
    /// `host:port` peers dial to reach this node.
    pub fn advertise(&self) -> String {
        format!("{}:{}", self.advertise_host, self.listen.port())
    }
}

/// A member's state as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Heard from within `down_after` (or this node itself).
    Alive,
    /// Not heard from for `down_after`.
    Down,
}

impl MemberState {
    /// Lower-case name, for status pages and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Down => "down",
        }
    }
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberStatus {
    /// Its node name.
    pub node: String,
    /// Where peers dial it.
    pub advertise: String,
    /// Alive or down.
    pub state: MemberState,
    /// Its start time (a restart changes it), milliseconds since the epoch.
    pub incarnation: u64,
    /// Milliseconds since the epoch when its last heartbeat arrived; `None` for this node.
    pub last_heartbeat_ms: Option<i64>,
}

/// The members this node sees, published on every heartbeat round.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterView {
    /// This node's name.
    pub this_node: String,
    /// Whether the node is configured to have peers (a `[cluster]` section).
    pub clustered: bool,
    /// Names of the alive members, this node included, sorted.
    pub alive: Vec<String>,
    /// Every member heard of, this node first.
    pub members: Vec<MemberStatus>,
}

impl ClusterView {
    /// The view of a node on its own.
    pub fn alone(this_node: &str, clustered: bool) -> Self {
        let this = MemberStatus { node: this_node.to_owned(), advertise: String::new(), state: MemberState::Alive, incarnation: 0, last_heartbeat_ms: None };
        Self { this_node: this_node.to_owned(), clustered, alive: vec![this_node.to_owned()], members: vec![this] }
    }

    /// True when the node should have peers but reaches none.
    pub fn degraded(&self) -> bool {
        self.clustered && self.alive.len() <= 1
    }
}

/// The actor; its settings are the arguments, its state [`MembershipState`].
#[derive(Debug, Default)]
pub struct Membership;

/// What the actor starts with.
#[derive(Debug)]
pub struct MembershipArgs {
    /// How to join.
    pub settings: MembershipSettings,
    /// Where the view is published.
    pub view: watch::Sender<ClusterView>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Record {
    advertise: String,
    incarnation: u64,
    last_heard: Instant,
    last_heartbeat_ms: i64,
}

/// The actor's state.
pub struct MembershipState {
    settings: MembershipSettings,
    incarnation: u64,
    members: HashMap<String, Record>,
    view: watch::Sender<ClusterView>,
    /// Addresses peers report for their peers, for discovery to dial.
    heard_of: Arc<Mutex<BTreeSet<String>>>,
    wake_discovery: Arc<Notify>,
    discovery: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MembershipState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipState").field("node", &self.settings.node_name).field("members", &self.members.len()).finish()
    }
}

/// Messages to the membership actor. The enum is remote-capable (heartbeats come from peers);
/// every variant's fields travel as bytes or strings.
#[derive(Debug, RactorClusterMessage)]
pub enum MembershipMessage {
    /// A peer's heartbeat: an encoded [`wire::Heartbeat`].
    Heartbeat(Vec<u8>),
    /// Time to send heartbeats and mark members gone quiet (this node's timer).
    Tick,
    /// A session ended (from the node server's events): redial now.
    SessionDown(String),
    /// A session is ready: the peer's actors are in the groups; greet it at once.
    SessionReady(String),
}

/// Forwards the node server's session events to the membership actor.
struct SessionEvents {
    membership: ActorRef<MembershipMessage>,
    /// Sessions that authenticated, by the node server's session id.
    authenticated: Mutex<HashSet<u64>>,
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, session: NodeServerSessionInformation) {
        debug!(peer = %session.peer_addr, incoming = session.is_server, "cluster session opened");
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        let was_authenticated = self.authenticated.lock().map(|mut set| set.remove(&session.node_id)).unwrap_or(false);
        if was_authenticated {
            let peer = session.peer_name.map(|name| name.name).unwrap_or_default();
            info!(peer = %peer, address = %session.peer_addr, "cluster session ended");
        } else {
            warn!(address = %session.peer_addr, "cluster peer refused: the session ended before it authenticated (wrong cookie, or not a switchyard node)");
        }
        let _gone = self.membership.cast(MembershipMessage::SessionDown(session.peer_addr));
    }

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        if let Ok(mut set) = self.authenticated.lock() {
            set.insert(session.node_id);
        }
    }

    fn node_session_ready(&self, session: NodeServerSessionInformation) {
        let peer = session.peer_name.map(|name| name.name).unwrap_or_default();
        info!(peer = %peer, address = %session.peer_addr, "cluster session ready");
        let _gone = self.membership.cast(MembershipMessage::SessionReady(peer));
    }
}

impl MembershipState {
    /// Every other node's membership actor this node has a session with.
    fn peers(&self) -> Vec<ActorCell> {
        ractor::pg::get_members(&wire::MEMBERSHIP_GROUP.to_owned()).into_iter().filter(|member| !member.get_id().is_local()).collect()
    }

    fn heartbeat(&self) -> Vec<u8> {
        let view = self.view.borrow();
        wire::encode(&wire::Heartbeat {
            node: self.settings.node_name.clone(),
            advertise: self.settings.advertise(),
            incarnation: self.incarnation,
            sent_unix_ms: u64::try_from(now_ms()).unwrap_or(0),
            alive: view.alive.clone(),
            peers: view.members.iter().skip(1).filter(|member| member.state == MemberState::Alive).map(|member| member.advertise.clone()).collect(),
        })
    }

    fn send_heartbeats(&self) {
        let heartbeat = self.heartbeat();
        for peer in self.peers() {
            let peer: ActorRef<MembershipMessage> = peer.into();
            if let Err(error) = peer.cast(MembershipMessage::Heartbeat(heartbeat.clone())) {
                debug!(%error, "heartbeat not sent");
            }
        }
    }

    fn record(&mut self, mut heartbeat: wire::Heartbeat) {
        let peers = std::mem::take(&mut heartbeat.peers);
        if let Ok(mut heard_of) = self.heard_of.lock() {
            heard_of.extend(peers);
        }
        if heartbeat.node == self.settings.node_name {
            if heartbeat.incarnation != self.incarnation {
                warn!(node = %heartbeat.node, advertise = %heartbeat.advertise, "another node uses this node's name; node names must be unique");
            }
            return;
        }
        let now = Instant::now();
        match self.members.get_mut(&heartbeat.node) {
            Some(record) => {
                if record.incarnation != heartbeat.incarnation {
                    info!(node = %heartbeat.node, "cluster member restarted");
                }
                record.advertise = heartbeat.advertise;
                record.incarnation = heartbeat.incarnation;
                record.last_heard = now;
                record.last_heartbeat_ms = now_ms();
            }
            None => {
                info!(node = %heartbeat.node, advertise = %heartbeat.advertise, "cluster member joined");
                self.members.insert(
                    heartbeat.node,
                    Record { advertise: heartbeat.advertise, incarnation: heartbeat.incarnation, last_heard: now, last_heartbeat_ms: now_ms() },
                );
            }
        }
    }

    /// Recomputes the view from the records and publishes it; members down for a long time
    /// (60 × `down_after`) are forgotten, so the table stays bounded.
    fn publish(&mut self) {
        let down_after = self.settings.down_after;
        let forget_after = down_after.saturating_mul(60);
        let before = self.members.len();
        self.members.retain(|_, record| record.last_heard.elapsed() < forget_after);
        if self.members.len() < before {
            debug!(forgotten = before - self.members.len(), "long-down members forgotten");
        }
        let this = &self.settings.node_name;
        let mut members = vec![MemberStatus {
            node: this.clone(),
            advertise: self.settings.advertise(),
            state: MemberState::Alive,
            incarnation: self.incarnation,
            last_heartbeat_ms: None,
        }];
        let mut others: Vec<MemberStatus> = self
            .members
            .iter()
            .map(|(node, record)| MemberStatus {
                node: node.clone(),
                advertise: record.advertise.clone(),
                state: if record.last_heard.elapsed() < down_after { MemberState::Alive } else { MemberState::Down },
                incarnation: record.incarnation,
                last_heartbeat_ms: Some(record.last_heartbeat_ms),
            })
            .collect();
        others.sort_by(|a, b| a.node.cmp(&b.node));
        members.extend(others);
        let alive: Vec<String> = members.iter().filter(|member| member.state == MemberState::Alive).map(|member| member.node.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let view = ClusterView { this_node: this.clone(), clustered: true, alive, members };
        let down = view.members.len() - view.alive.len();
        self.metrics.cluster_members.with_label_values(&["alive"]).set(i64::try_from(view.alive.len()).unwrap_or(i64::MAX));
        self.metrics.cluster_members.with_label_values(&["down"]).set(i64::try_from(down).unwrap_or(i64::MAX));
        self.metrics.cluster_degraded.set(i64::from(view.degraded()));
        self.view.send_if_modified(|current| {
            if current.alive != view.alive {
                info!(alive = ?view.alive, "cluster membership changed");
            }
            let changed = *current != view;
            *current = view;
            changed
        });
    }
}

impl Actor for Membership {
    type Msg = MembershipMessage;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: MembershipArgs) -> Result<MembershipState, ActorProcessingErr> {
        let settings = args.settings;
        let (encryption, mode) = match &settings.tls {
            Some(tls) => (IncomingEncryptionMode::Tls(tls.acceptor.clone()), NodeConnectionMode::Isolated),
            None => (IncomingEncryptionMode::Raw, NodeConnectionMode::Transitive),
        };
        let server = NodeServer::new(
            settings.listen.port(),
            settings.cookie.clone(),
            settings.node_name.clone(),
            settings.advertise_host.clone(),
            Some(encryption),
            Some(mode),
        )
        .with_listen_addr(settings.listen.ip())
        .with_max_inbound_frame_size(settings.max_frame_bytes);
        let (node_server, _join) = Actor::spawn_linked(Some(format!("node-server@{}", settings.node_name)), server, (), myself.get_cell()).await?;
        node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: "membership".into(),
            subscription: Box::new(SessionEvents { membership: myself.clone(), authenticated: Mutex::new(HashSet::new()) }),
        })?;
        ractor::pg::join(wire::MEMBERSHIP_GROUP.to_owned(), vec![myself.get_cell()]);
        myself.send_interval(settings.heartbeat_interval, || MembershipMessage::Tick);
        let wake_discovery = Arc::new(Notify::new());
        let heard_of = Arc::new(Mutex::new(BTreeSet::new()));
        let discovery = tokio::spawn(discover(settings.clone(), node_server, args.view.subscribe(), Arc::clone(&heard_of), Arc::clone(&wake_discovery)));
        info!(node = %settings.node_name, listen = %settings.listen, advertise = %settings.advertise(), seeds = ?settings.seeds, tls = settings.tls.is_some(), "cluster membership started");
        let mut state = MembershipState {
            settings,
            incarnation: u64::try_from(now_ms()).unwrap_or(0),
            members: HashMap::new(),
            view: args.view,
            heard_of,
            wake_discovery,
            discovery,
            metrics: args.metrics,
        };
        state.publish();
        Ok(state)
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: MembershipMessage, state: &mut MembershipState) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMessage::Heartbeat(bytes) => match wire::decode::<wire::Heartbeat>("heartbeat", &bytes) {
                Ok(heartbeat) => {
                    let newly_heard = state.members.get(&heartbeat.node).is_none_or(|record| record.last_heard.elapsed() >= state.settings.down_after);
                    state.record(heartbeat);
                    if newly_heard {
                        state.publish();
                    }
                }
                Err(error) => warn!(%error, "heartbeat ignored"),
            },
            MembershipMessage::Tick => {
                state.send_heartbeats();
                state.publish();
            }
            MembershipMessage::SessionDown(address) => {
                debug!(%address, "redialling after a session ended");
                state.wake_discovery.notify_one();
            }
            MembershipMessage::SessionReady(_peer) => state.send_heartbeats(),
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut MembershipState) -> Result<(), ActorProcessingErr> {
        state.discovery.abort();
        ractor::pg::leave(wire::MEMBERSHIP_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(())
    }
}

/// Redial state of one address.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    next_try: Option<Instant>,
}

/// First redial delay; it doubles per failure up to the discovery interval.
const FIRST_REDIAL: Duration = Duration::from_millis(200);
/// Longest a dial or a name resolution may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves the seeds, adds the advertised addresses of known members and of their peers, and
/// dials every one without a session, until the actor stops it.
async fn discover(
    settings: MembershipSettings,
    node_server: ActorRef<NodeServerMessage>,
    view: watch::Receiver<ClusterView>,
    heard_of: Arc<Mutex<BTreeSet<String>>>,
    wake: Arc<Notify>,
) {
    let own = settings.advertise();
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    let mut last_resolved = Instant::now();
    let mut resolved: BTreeSet<String> = BTreeSet::new();
    let mut own_addresses: BTreeSet<String> = BTreeSet::new();
    let mut first = true;
    loop {
        if first || last_resolved.elapsed() >= settings.discovery_interval {
            resolved = resolve(&settings.seeds).await;
            own_addresses = resolve(std::slice::from_ref(&own)).await;
            last_resolved = Instant::now();
            first = false;
        }
        let mut targets = resolved.clone();
        for member in view.borrow().members.iter().skip(1) {
            targets.insert(member.advertise.clone());
        }
        // Addresses heard of only second hand are dialled once each round they are reported.
        if let Ok(mut heard) = heard_of.lock() {
            targets.append(&mut heard);
        }
        targets.retain(|target| *target != own && !own_addresses.contains(target) && *target != settings.listen.to_string());
        let connected = connected_addresses(&node_server).await;
        let now = Instant::now();
        let mut dials = Vec::new();
        for target in &targets {
            let state = backoff.entry(target.clone()).or_default();
            if connected.contains(target) {
                *state = Backoff::default();
                continue;
            }
            if state.next_try.is_some_and(|next| now < next) {
                continue;
            }
            let delay = FIRST_REDIAL.saturating_mul(2u32.saturating_pow(state.failures.min(16))).min(settings.discovery_interval);
            state.failures += 1;
            state.next_try = Some(now + delay);
            let node_server = node_server.clone();
            let target = target.clone();
            let tls = settings.tls.clone();
            dials.push(async move {
                let dial = async {
                    match tls {
                        Some(tls) => ractor_cluster::client_connect_enc(&node_server, target.as_str(), tls.connector, tls.server_name).await,
                        None => ractor_cluster::client_connect(&node_server, target.as_str()).await,
                    }
                };
                match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
                    Ok(Ok(())) => debug!(%target, "dialled a cluster peer"),
                    Ok(Err(error)) => warn_dial(&target, &error),
                    Err(_elapsed) => debug!(%target, "dialling a cluster peer timed out"),
                }
            });
        }
        futures::future::join_all(dials).await;
        backoff.retain(|address, _| targets.contains(address));
        // Come back soon while some address has no session; otherwise at the discovery interval
        // (or when a session ends).
        let pause = if targets.iter().all(|target| connected.contains(target)) { settings.discovery_interval } else { FIRST_REDIAL.max(Duration::from_millis(250)) };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
        }
    }
}

/// A refused TLS handshake is the operator's to fix (a certificate from another CA, or none):
/// it is a warning; an unreachable peer is routine while it restarts.
fn warn_dial(target: &str, error: &ractor_cluster::ClientConnectErr) {
    match error {
        ractor_cluster::ClientConnectErr::Encryption(cause) => warn!(%target, error = %cause, "cluster peer refused: the TLS handshake failed"),
        other => debug!(%target, error = %other, "cluster peer unreachable"),
    }
}

/// Every address the entries resolve to, as `ip:port` (entries that do not resolve are logged).
async fn resolve(entries: &[String]) -> BTreeSet<String> {
    let mut addresses = BTreeSet::new();
    for entry in entries {
        match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::lookup_host(entry.as_str())).await {
            Ok(Ok(found)) => addresses.extend(found.map(|address| address.to_string())),
            Ok(Err(error)) => debug!(seed = %entry, %error, "cluster seed does not resolve"),
            Err(_elapsed) => debug!(seed = %entry, "resolving a cluster seed timed out"),
        }
    }
    addresses
}

/// The addresses this node has an authenticated session with: the dialled address of outgoing
/// sessions and the advertised address of every peer.
async fn connected_addresses(node_server: &ActorRef<NodeServerMessage>) -> HashSet<String> {
    match ractor::call_t!(node_server, NodeServerMessage::GetSessions, 1_000) {
        Ok(sessions) => sessions
            .into_values()
            .flat_map(|session| {
                let advertised = session.peer_name.map(|name| name.connection_string);
                std::iter::once(session.peer_addr).chain(advertised)
            })
            .collect(),
        Err(error) => {
            warn!(%error, "the cluster node server did not list its sessions");
            HashSet::new()
        }
    }
}
