//! The `CachePeer` actor: one per node, the door through which other nodes reach this node's
//! semantic shards. It joins the `pg` group [`wire::CACHE_PEER_GROUP`] under the name
//! `cache-peer@<node>`, so every node finds every other node's peer once their session is ready.
//!
//! Every message carries one encoded [`wire`] message; a frame that does not decode is logged
//! and dropped (the caller times out and asks the next replica). The actor never waits on a
//! shard itself: each lookup and pull runs on a task of its own that answers the caller, so one
//! slow shard holds up nothing else.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::cache::semantic::shard::ShardMessage;
use crate::cluster::directory::Directory;
use crate::cluster::wire;

/// How long a peer's task waits for a local shard.
const SHARD_TIMEOUT: Duration = Duration::from_millis(500);

/// Messages from other nodes. Variants travel by name: never rename one.
#[derive(Debug, RactorClusterMessage)]
pub enum CachePeerMessage {
    /// The candidates of one partition: a [`wire::ShardLookup`].
    #[rpc]
    Lookup(
        /// The encoded lookup.
        Vec<u8>,
        /// Reply channel for RPC: an encoded [`wire::ShardLookupReply`].
        RpcReplyPort<Vec<u8>>,
    ),
    /// Stores an entry: a [`wire::ShardInsert`].
    Insert(Vec<u8>),
    /// Counts a hit: a [`wire::ShardHit`].
    Hit(Vec<u8>),
    /// Drops matching entries from every shard: a [`wire::ShardInvalidate`].
    Invalidate(Vec<u8>),
    /// A chunk of a partition for a new owner: a [`wire::PartitionPull`].
    #[rpc]
    Pull(
        /// The encoded pull.
        Vec<u8>,
        /// Reply channel for RPC: an encoded [`wire::PartitionChunk`].
        RpcReplyPort<Vec<u8>>,
    ),
}

/// The actor; it holds nothing but the directory it reads.
#[derive(Debug, Default)]
pub struct CachePeer;

/// The peer's state: the node's directory.
#[derive(Debug)]
pub struct CachePeerState {
    directory: Arc<ArcSwap<Directory>>,
}

impl CachePeer {
    /// Starts the node's peer under `cache-peer@<node>` and joins the group.
    pub async fn start(node: &str, directory: Arc<ArcSwap<Directory>>) -> anyhow::Result<ActorRef<CachePeerMessage>> {
        let name = wire::actor_name("cache-peer", node);
        let (peer, _join) = Actor::spawn(Some(name), CachePeer, directory).await?;
        Ok(peer)
    }
}

fn local_shard(directory: &Directory, partition: u32) -> Option<ActorRef<ShardMessage>> {
    directory.shards.get(partition as usize).cloned()
}

async fn answer_lookup(directory: Arc<Directory>, lookup: wire::ShardLookup) -> wire::ShardLookupReply {
    let not_served = wire::ShardLookupReply { served: false, candidates: Vec::new() };
    if !directory.serves(lookup.partition) {
        return not_served;
    }
    let Some(shard) = local_shard(&directory, lookup.partition) else { return not_served };
    let count = lookup.count.clamp(1, 64) as usize;
    let asked = ractor::call_t!(
        shard,
        |reply| ShardMessage::Lookup { context_key: lookup.context_key, vector: lookup.vector, count, min_similarity: lookup.min_similarity, reply },
        SHARD_TIMEOUT.as_millis() as u64
    );
    match asked {
        Ok(candidates) => wire::ShardLookupReply {
            served: true,
            candidates: candidates
                .into_iter()
                .map(|candidate| wire::Candidate {
                    local_id: candidate.id,
                    similarity: candidate.similarity,
                    entry: Some(wire::entry_to_wire(&candidate.entry, &candidate.vector)),
                })
                .collect(),
        },
        Err(error) => {
            warn!(partition = lookup.partition, %error, "local shard did not answer a peer's lookup");
            not_served
        }
    }
}

async fn answer_pull(directory: Arc<Directory>, pull: wire::PartitionPull) -> wire::PartitionChunk {
    let not_held = wire::PartitionChunk { held: false, entries: Vec::new(), last_local_id: pull.after_local_id, done: true };
    // A node still loading the partition gives what it has: two nodes that each held part of
    // it (a cluster healing) fill each other in, and merging is idempotent.
    if !directory.stores(pull.partition) {
        return not_held;
    }
    let Some(shard) = local_shard(&directory, pull.partition) else { return not_held };
    let max_bytes = (pull.max_bytes as usize).clamp(4 * 1024, 4 * 1024 * 1024);
    match ractor::call_t!(shard, |reply| ShardMessage::Chunk { after_id: pull.after_local_id, max_bytes, reply }, 5_000) {
        Ok(chunk) => wire::PartitionChunk {
            held: true,
            last_local_id: chunk.entries.last().map_or(pull.after_local_id, |(id, _, _)| *id),
            entries: chunk.entries.iter().map(|(_, entry, vector)| wire::entry_to_wire(entry, vector)).collect(),
            done: chunk.done,
        },
        Err(error) => {
            warn!(partition = pull.partition, %error, "local shard did not give a chunk for a handoff");
            not_held
        }
    }
}

impl Actor for CachePeer {
    type Msg = CachePeerMessage;
    type State = CachePeerState;
    type Arguments = Arc<ArcSwap<Directory>>;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, directory: Arc<ArcSwap<Directory>>) -> Result<CachePeerState, ActorProcessingErr> {
        ractor::pg::join(wire::CACHE_PEER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(CachePeerState { directory })
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: CachePeerMessage, state: &mut CachePeerState) -> Result<(), ActorProcessingErr> {
        let directory = state.directory.load_full();
        match message {
            CachePeerMessage::Lookup(bytes, reply) => match wire::decode::<wire::ShardLookup>("shard lookup", &bytes) {
                Ok(lookup) => {
                    let span = info_span!("remote_shard_lookup", partition = lookup.partition);
                    wire::remote_span_parent(&span, &lookup.traceparent);
                    tokio::spawn(
                        async move {
                            let answer = answer_lookup(directory, lookup).await;
                            let _caller_gone = reply.send(wire::encode(&answer));
                        }
                        .instrument(span),
                    );
                }
                Err(error) => warn!(%error, "peer lookup dropped"),
            },
            CachePeerMessage::Insert(bytes) => {
                let insert = wire::decode::<wire::ShardInsert>("shard insert", &bytes).and_then(|insert| {
                    let partition = insert.partition;
                    let entry = insert.entry.ok_or(wire::WireError { what: "shard insert", cause: "no entry".into() })?;
                    wire::entry_from_wire(entry).map(|entry| (partition, entry))
                });
                match insert {
                    Ok((partition, (entry, vector))) if directory.stores(partition) => {
                        if let Some(shard) = local_shard(&directory, partition) {
                            let _stopping = shard.cast(ShardMessage::Insert { entry: Box::new(entry), vector });
                        }
                    }
                    Ok((partition, _)) => debug!(partition, "insert for a partition this node does not own; dropped"),
                    Err(error) => warn!(%error, "peer insert dropped"),
                }
            }
            CachePeerMessage::Hit(bytes) => match wire::decode::<wire::ShardHit>("shard hit", &bytes) {
                Ok(hit) => {
                    if let Some(shard) = local_shard(&directory, hit.partition) {
                        let _stopping = shard.cast(ShardMessage::Hit(hit.local_id));
                    }
                }
                Err(error) => warn!(%error, "peer hit dropped"),
            },
            CachePeerMessage::Invalidate(bytes) => {
                match wire::decode::<wire::ShardInvalidate>("invalidation", &bytes).and_then(wire::invalidation_from_wire) {
                    Ok(what) => {
                        for shard in directory.shards.iter() {
                            let _stopping = shard.cast(ShardMessage::Invalidate(what.clone()));
                        }
                    }
                    Err(error) => warn!(%error, "peer invalidation dropped"),
                }
            }
            CachePeerMessage::Pull(bytes, reply) => match wire::decode::<wire::PartitionPull>("partition pull", &bytes) {
                Ok(pull) => {
                    tokio::spawn(async move {
                        let chunk = answer_pull(directory, pull).await;
                        let _caller_gone = reply.send(wire::encode(&chunk));
                    });
                }
                Err(error) => warn!(%error, "peer pull dropped"),
            },
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, _state: &mut CachePeerState) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(wire::CACHE_PEER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(())
    }
}
