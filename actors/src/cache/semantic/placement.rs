//! The `Placement` actor: one per clustered node, the only writer of the semantic layer's
//! [`Directory`]. It turns membership changes into a new [`PartitionMap`], decides what this
//! node does with each partition, moves data, and publishes the new directory.
//!
//! For each partition, when the alive members change:
//! - a partition this node gains (or held alone and now shares) is **loading**: a task pulls it
//!   from a live previous owner (else another owner) in chunks well below the session's frame
//!   limit and merges them into the local shard (entries are idempotent by uid); lookups go to
//!   the other owners until it is loaded;
//! - a partition this node loses is **leaving**: it still answers lookups (other nodes may be
//!   loading it from here) until `handoff_grace` passes, then its shard is emptied;
//! - a partition it keeps sharing with others stays served.
//!
//! Every node computes the same map from the same member list, so no coordination is needed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::pg::GroupChangeMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cache::semantic::peer::CachePeerMessage;
use crate::cache::semantic::shard::ShardMessage;
use crate::cluster::directory::{Directory, LocalState};
use crate::cluster::membership::ClusterView;
use crate::cluster::ring::PartitionMap;
use crate::cluster::wire;
use crate::metrics::Metrics;

/// Bytes of entries asked for per chunk: far below ractor_cluster's 16 MiB frame limit.
pub const CHUNK_BYTES: u32 = 1024 * 1024;
/// How long one chunk may take to arrive.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a handoff waits for a source's cache peer to appear in its group.
const PEER_WAIT: Duration = Duration::from_secs(2);

/// What the actor starts with.
#[derive(Debug)]
pub struct PlacementArgs {
    /// This node's name.
    pub this_node: String,
    /// Partitions of the layer.
    pub partitions: u32,
    /// Owners per partition.
    pub replication: usize,
    /// How long a partition this node lost keeps answering lookups.
    pub handoff_grace: Duration,
    /// The directory to publish.
    pub directory: Arc<ArcSwap<Directory>>,
    /// The membership's view.
    pub view: watch::Receiver<ClusterView>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
}

/// The actor; its state is [`PlacementState`].
#[derive(Debug, Default)]
pub struct Placement;

/// The actor's state.
#[derive(Debug)]
pub struct PlacementState {
    this_node: String,
    replication: usize,
    handoff_grace: Duration,
    directory: Arc<ArcSwap<Directory>>,
    /// Bumped whenever a partition's state changes, so late messages about it are ignored.
    generations: Vec<u64>,
    handoffs: HashMap<u32, tokio::task::JoinHandle<()>>,
    forward_view: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

/// Messages to the placement actor (all from this node).
#[derive(Debug, RactorMessage)]
pub enum PlacementMessage {
    /// The alive members changed.
    Members(Vec<String>),
    /// A partition finished loading.
    Loaded {
        /// The partition.
        partition: u32,
        /// Its generation when the handoff started.
        generation: u64,
    },
    /// A lost partition's grace period is over.
    GraceOver {
        /// The partition.
        partition: u32,
        /// Its generation when it started leaving.
        generation: u64,
    },
}

impl PlacementState {
    fn publish(&self, directory: Directory) {
        self.metrics.cluster_partitions_owned.set(i64::try_from(directory.owned()).unwrap_or(i64::MAX));
        self.metrics.cluster_handoffs_in_progress.set(i64::try_from(directory.loading().len()).unwrap_or(i64::MAX));
        self.directory.store(Arc::new(directory));
    }

    fn bump(&mut self, partition: u32) -> u64 {
        let generation = &mut self.generations[partition as usize];
        *generation += 1;
        if let Some(handoff) = self.handoffs.remove(&partition) {
            handoff.abort();
        }
        *generation
    }

    /// The new map over `alive`, and what this node does with each partition.
    fn rebalance(&mut self, myself: &ActorRef<PlacementMessage>, alive: Vec<String>) {
        let current = self.directory.load_full();
        if current.map.members == alive {
            return;
        }
        let partitions = current.local.len() as u32;
        let old = current.map.clone();
        let map = PartitionMap::compute(old.version + 1, alive, partitions, self.replication);
        let mut next = Directory { map, previous: Some(old.clone()), ..(*current).clone() };
        let this = self.this_node.clone();
        let (mut gained, mut lost) = (0, 0);
        for partition in 0..partitions {
            let was_owner = old.owns(&this, partition);
            let is_owner = next.map.owns(&this, partition);
            let held_alone = old.owners_of(partition).len() == 1;
            let state = next.local[partition as usize];
            if is_owner {
                let others: Vec<String> = next.map.owners_of(partition).iter().filter(|owner| **owner != this).cloned().collect();
                let needs_data = !was_owner || (held_alone && !others.is_empty()) || state == LocalState::Loading;
                if !needs_data {
                    if state != LocalState::Serving {
                        self.bump(partition);
                        next.local[partition as usize] = LocalState::Serving;
                    }
                    continue;
                }
                // Pull from the previous owners still alive first: they hold the partition.
                let mut sources: Vec<String> =
                    old.owners_of(partition).iter().filter(|owner| **owner != this && next.map.members.contains(owner)).cloned().collect();
                for owner in others {
                    if !sources.contains(&owner) {
                        sources.push(owner);
                    }
                }
                let generation = self.bump(partition);
                if sources.is_empty() {
                    next.local[partition as usize] = LocalState::Serving;
                    continue;
                }
                gained += 1;
                next.local[partition as usize] = LocalState::Loading;
                let handoff = Handoff {
                    partition,
                    generation,
                    sources,
                    directory: Arc::clone(&self.directory),
                    placement: myself.clone(),
                    metrics: Arc::clone(&self.metrics),
                };
                self.handoffs.insert(partition, tokio::spawn(handoff.run()));
            } else if matches!(state, LocalState::Serving | LocalState::Loading) {
                lost += 1;
                let generation = self.bump(partition);
                next.local[partition as usize] = LocalState::Leaving;
                let placement = myself.clone();
                let grace = self.handoff_grace;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let _stopped = placement.cast(PlacementMessage::GraceOver { partition, generation });
                });
            }
        }
        info!(version = next.map.version, members = ?next.map.members, owned = next.owned(), loading = gained, leaving = lost, "semantic partitions placed");
        self.publish(next);
    }

    /// Rebuilds the peer table from the cache peers' group.
    fn refresh_peers(&self) {
        let mut peers: HashMap<String, (ractor::ActorId, ActorRef<CachePeerMessage>)> = HashMap::new();
        for member in ractor::pg::get_members(&wire::CACHE_PEER_GROUP.to_owned()) {
            if member.get_id().is_local() {
                continue;
            }
            let Some(node) = member.get_name().as_deref().and_then(wire::node_of).map(str::to_owned) else { continue };
            let id = member.get_id();
            // After a restart the old session's stand-in may linger: keep the newest session's.
            let newer = peers.get(&node).is_none_or(|(known, _)| newer_remote(id, *known));
            if newer {
                peers.insert(node, (id, member.into()));
            }
        }
        let current = self.directory.load_full();
        let peers: HashMap<String, ActorRef<CachePeerMessage>> = peers.into_iter().map(|(node, (_, peer))| (node, peer)).collect();
        if peers.keys().collect::<std::collections::BTreeSet<_>>() != current.peers.keys().collect() {
            debug!(peers = ?peers.keys().collect::<Vec<_>>(), "cache peers changed");
        }
        self.publish(Directory { peers, ..(*current).clone() });
    }
}

/// True when remote actor id `a` comes from a later session than `b`.
fn newer_remote(a: ractor::ActorId, b: ractor::ActorId) -> bool {
    match (a, b) {
        (ractor::ActorId::Remote { node_id: a_node, pid: a_pid }, ractor::ActorId::Remote { node_id: b_node, pid: b_pid }) => (a_node, a_pid) > (b_node, b_pid),
        _ => false,
    }
}

/// One partition being pulled from a replica.
struct Handoff {
    partition: u32,
    generation: u64,
    sources: Vec<String>,
    directory: Arc<ArcSwap<Directory>>,
    placement: ActorRef<PlacementMessage>,
    metrics: Arc<Metrics>,
}

impl Handoff {
    async fn run(self) {
        let started = Instant::now();
        let partition = self.partition;
        for source in &self.sources {
            match self.pull_from(source).await {
                Ok((entries, bytes)) => {
                    info!(partition, source = %source, entries, bytes, took_ms = started.elapsed().as_millis() as u64, "semantic partition loaded");
                    let _stopped = self.placement.cast(PlacementMessage::Loaded { partition, generation: self.generation });
                    return;
                }
                Err(error) => warn!(partition, source = %source, %error, "semantic handoff from this source failed; trying the next"),
            }
        }
        warn!(partition, sources = ?self.sources, "no replica gave the partition; serving what this node holds");
        let _stopped = self.placement.cast(PlacementMessage::Loaded { partition, generation: self.generation });
    }

    async fn peer(&self, source: &str) -> Option<ActorRef<CachePeerMessage>> {
        let deadline = Instant::now() + PEER_WAIT;
        loop {
            if let Some(peer) = self.directory.load().peers.get(source) {
                return Some(peer.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pulls every chunk from `source` into the local shard: entries merged and bytes moved.
    async fn pull_from(&self, source: &str) -> anyhow::Result<(usize, u64)> {
        let peer = self.peer(source).await.ok_or_else(|| anyhow::anyhow!("no cache peer of {source} in the group"))?;
        let shard = self.directory.load().shards.get(self.partition as usize).cloned().ok_or_else(|| anyhow::anyhow!("no local shard"))?;
        pull_partition(&peer, &shard, self.partition, Some(&self.metrics)).await
    }
}

/// Pulls every chunk of `partition` from another node's cache `peer` into `shard`: the entries
/// merged and the bytes received.
pub async fn pull_partition(peer: &ActorRef<CachePeerMessage>, shard: &ActorRef<ShardMessage>, partition: u32, metrics: Option<&Metrics>) -> anyhow::Result<(usize, u64)> {
    let (mut cursor, mut merged, mut bytes) = (0, 0, 0u64);
    loop {
        let pull = wire::encode(&wire::PartitionPull { partition, after_local_id: cursor, max_bytes: CHUNK_BYTES });
        let reply = ractor::call_t!(peer, |reply| CachePeerMessage::Pull(pull, reply), CHUNK_TIMEOUT.as_millis() as u64)?;
        bytes += reply.len() as u64;
        if let Some(metrics) = metrics {
            metrics.cluster_handoff_bytes.inc_by(reply.len() as u64);
        }
        let chunk = wire::decode::<wire::PartitionChunk>("partition chunk", &reply)?;
        if !chunk.held {
            anyhow::bail!("the peer does not hold partition {partition}");
        }
        let mut entries = Vec::with_capacity(chunk.entries.len());
        for entry in chunk.entries {
            match wire::entry_from_wire(entry) {
                Ok(entry) => entries.push(entry),
                Err(error) => warn!(partition, %error, "entry skipped in a handoff"),
            }
        }
        merged += ractor::call_t!(shard, |reply| ShardMessage::Merge { entries, reply }, CHUNK_TIMEOUT.as_millis() as u64)?;
        cursor = chunk.last_local_id;
        if chunk.done {
            return Ok((merged, bytes));
        }
    }
}

impl Actor for Placement {
    type Msg = PlacementMessage;
    type State = PlacementState;
    type Arguments = PlacementArgs;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: PlacementArgs) -> Result<PlacementState, ActorProcessingErr> {
        ractor::pg::monitor(wire::CACHE_PEER_GROUP.to_owned(), myself.get_cell());
        let mut view = args.view;
        let forward = myself.clone();
        let forward_view = tokio::spawn(async move {
            let mut last: Vec<String> = Vec::new();
            loop {
                let alive = view.borrow_and_update().alive.clone();
                if alive != last {
                    last.clone_from(&alive);
                    if forward.cast(PlacementMessage::Members(alive)).is_err() {
                        return;
                    }
                }
                if view.changed().await.is_err() {
                    return;
                }
            }
        });
        let state = PlacementState {
            this_node: args.this_node,
            replication: args.replication,
            handoff_grace: args.handoff_grace,
            directory: args.directory,
            generations: vec![0; args.partitions as usize],
            handoffs: HashMap::new(),
            forward_view,
            metrics: args.metrics,
        };
        state.refresh_peers();
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<Self::Msg>, message: PlacementMessage, state: &mut PlacementState) -> Result<(), ActorProcessingErr> {
        match message {
            PlacementMessage::Members(alive) => {
                state.refresh_peers();
                state.rebalance(&myself, alive);
            }
            PlacementMessage::Loaded { partition, generation } => {
                if state.generations.get(partition as usize) == Some(&generation) {
                    state.handoffs.remove(&partition);
                    let current = state.directory.load_full();
                    let mut next = (*current).clone();
                    next.local[partition as usize] = LocalState::Serving;
                    state.publish(next);
                }
            }
            PlacementMessage::GraceOver { partition, generation } => {
                if state.generations.get(partition as usize) == Some(&generation) {
                    let current = state.directory.load_full();
                    if let Some(shard) = current.shards.get(partition as usize) {
                        let _stopping = shard.cast(ShardMessage::Clear);
                    }
                    let mut next = (*current).clone();
                    next.local[partition as usize] = LocalState::Idle;
                    debug!(partition, "lost semantic partition dropped after its grace period");
                    state.publish(next);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(&self, _myself: ActorRef<Self::Msg>, event: SupervisionEvent, state: &mut PlacementState) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Join(..) | GroupChangeMessage::Leave(..)) = event {
            state.refresh_peers();
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut PlacementState) -> Result<(), ActorProcessingErr> {
        ractor::pg::demonitor(wire::CACHE_PEER_GROUP.to_owned(), myself.get_id());
        state.forward_view.abort();
        for (_, handoff) in state.handoffs.drain() {
            handoff.abort();
        }
        Ok(())
    }
}
