//! Where each semantic partition is served: an immutable snapshot that request tasks read
//! without a mailbox round trip (published with `arc-swap` by the `Placement` actor, its only
//! writer). It holds the partition map, this node's state for each partition, and the
//! references to every shard: local `CacheShard`s and the other nodes' cache peers.
//!
//! The order in which a lookup asks ([`Directory::lookup_nodes`]) and where an insert goes
//! ([`Directory::insert_nodes`]) are pure functions of the snapshot, tested without a network.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::ActorRef;

use crate::cache::semantic::peer::CachePeerMessage;
use crate::cache::semantic::shard::ShardMessage;
use crate::cluster::ring::PartitionMap;

/// This node's relation to one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalState {
    /// An owner whose shard holds the partition: it answers lookups.
    Serving,
    /// A new owner pulling the partition from a replica: lookups go to the other owners first.
    Loading,
    /// No longer an owner; still answers lookups routed to it until the grace period ends.
    Leaving,
    /// Not an owner; the local shard is empty.
    Idle,
}

/// One place a lookup or insert can go.
#[derive(Clone, Debug)]
pub enum Route {
    /// This node's own shard.
    Local(ActorRef<ShardMessage>),
    /// Another node, through its cache peer.
    Remote {
        /// The node's name.
        node: String,
        /// Its cache peer.
        peer: ActorRef<CachePeerMessage>,
    },
}

/// The snapshot.
#[derive(Clone, Debug)]
pub struct Directory {
    /// This node's name.
    pub this_node: String,
    /// Owners of every partition over the live members.
    pub map: PartitionMap,
    /// The map before the last change: its owners still answer lookups for partitions whose new
    /// owners are loading.
    pub previous: Option<PartitionMap>,
    /// This node's state per partition.
    pub local: Vec<LocalState>,
    /// Every other node's cache peer, by node name.
    pub peers: HashMap<String, ActorRef<CachePeerMessage>>,
    /// This node's shards, one per partition.
    pub shards: Arc<Vec<ActorRef<ShardMessage>>>,
}

impl Directory {
    /// A node on its own: every partition served locally.
    pub fn alone(this_node: &str, partitions: u32, replication: usize, shards: Arc<Vec<ActorRef<ShardMessage>>>) -> Self {
        Self {
            this_node: this_node.to_owned(),
            map: PartitionMap::compute(0, [this_node.to_owned()], partitions, replication),
            previous: None,
            local: vec![LocalState::Serving; partitions as usize],
            peers: HashMap::new(),
            shards,
        }
    }

    fn local_state(&self, partition: u32) -> LocalState {
        self.local.get(partition as usize).copied().unwrap_or(LocalState::Idle)
    }

    /// True when this node answers lookups for `partition` (an owner holding it, or an old
    /// owner in its grace period).
    pub fn serves(&self, partition: u32) -> bool {
        matches!(self.local_state(partition), LocalState::Serving | LocalState::Leaving)
    }

    /// True when this node stores inserts for `partition` (any owner, loading included, and an
    /// old owner in its grace period, which may still be asked).
    pub fn stores(&self, partition: u32) -> bool {
        !matches!(self.local_state(partition), LocalState::Idle)
    }

    /// The nodes a lookup asks, in order: this node when it serves the partition as an owner,
    /// the other owners (primary first), the previous owners still alive and reachable (a
    /// handoff in progress), and last this node's own shard when it is loading or leaving.
    pub fn lookup_nodes(&self, partition: u32) -> Vec<&str> {
        self.lookup_order(partition, |node| self.peers.contains_key(node))
    }

    /// [`Directory::lookup_nodes`] with `reachable` saying which other nodes can be asked.
    fn lookup_order(&self, partition: u32, reachable: impl Fn(&str) -> bool) -> Vec<&str> {
        let this = self.this_node.as_str();
        let state = self.local_state(partition);
        let owners = self.map.owners_of(partition);
        let mut order: Vec<&str> = Vec::with_capacity(owners.len() + 2);
        if state == LocalState::Serving && owners.iter().any(|owner| owner == this) {
            order.push(this);
        }
        for owner in owners {
            if owner != this && reachable(owner) {
                order.push(owner);
            }
        }
        if let Some(previous) = &self.previous {
            for owner in previous.owners_of(partition) {
                let alive = self.map.members.contains(owner);
                if owner != this && alive && reachable(owner) && !order.contains(&owner.as_str()) {
                    order.push(owner);
                }
            }
        }
        if self.stores(partition) && !order.contains(&this) {
            order.push(this);
        }
        order
    }

    /// The nodes an insert goes to: every owner this node can reach, and this node while it
    /// still stores the partition.
    pub fn insert_nodes(&self, partition: u32) -> Vec<&str> {
        self.insert_order(partition, |node| self.peers.contains_key(node))
    }

    /// [`Directory::insert_nodes`] with `reachable` saying which other nodes can be sent to.
    fn insert_order(&self, partition: u32, reachable: impl Fn(&str) -> bool) -> Vec<&str> {
        let this = self.this_node.as_str();
        let mut nodes: Vec<&str> = self.map.owners_of(partition).iter().map(String::as_str).filter(|owner| *owner != this && reachable(owner)).collect();
        if self.stores(partition) {
            nodes.insert(0, this);
        }
        nodes
    }

    /// The route to `node` for `partition`.
    pub fn route(&self, node: &str, partition: u32) -> Option<Route> {
        if node == self.this_node {
            return self.shards.get(partition as usize).cloned().map(Route::Local);
        }
        self.peers.get(node).cloned().map(|peer| Route::Remote { node: node.to_owned(), peer })
    }

    /// Partitions this node owns.
    pub fn owned(&self) -> usize {
        self.map.owned_by(&self.this_node).len()
    }

    /// Partitions this node is loading.
    pub fn loading(&self) -> Vec<u32> {
        (0..self.local.len() as u32).filter(|partition| self.local_state(*partition) == LocalState::Loading).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory(this: &str, members: &[&str], local: LocalState, previous: Option<&[&str]>) -> Directory {
        let map = PartitionMap::compute(2, members.iter().map(|member| (*member).to_owned()), 8, 2);
        let previous = previous.map(|members| PartitionMap::compute(1, members.iter().map(|member| (*member).to_owned()), 8, 2));
        Directory { this_node: this.to_owned(), map, previous, local: vec![local; 8], peers: HashMap::new(), shards: Arc::new(Vec::new()) }
    }

    #[test]
    fn a_lone_node_serves_everything_itself() {
        let directory = Directory::alone("a", 8, 2, Arc::new(Vec::new()));
        for partition in 0..8 {
            assert_eq!(directory.lookup_nodes(partition), vec!["a"]);
            assert_eq!(directory.insert_nodes(partition), vec!["a"]);
            assert!(directory.serves(partition));
        }
    }

    #[test]
    fn an_owner_asks_itself_first_and_a_non_owner_asks_the_primary_first() {
        let mut directory = directory("a", &["a", "b", "c"], LocalState::Idle, None);
        for partition in 0..8 {
            let owners = directory.map.owners_of(partition).to_vec();
            directory.local[partition as usize] = if owners.contains(&"a".to_owned()) { LocalState::Serving } else { LocalState::Idle };
        }
        for partition in 0..8 {
            let owners = directory.map.owners_of(partition).to_vec();
            let order = directory.lookup_order(partition, |_| true);
            if owners.contains(&"a".to_owned()) {
                assert_eq!(order[0], "a", "partition {partition}: {order:?}");
                assert_eq!(order.len(), 2);
                assert_eq!(directory.insert_order(partition, |_| true).len(), 2, "an insert goes to both owners");
            } else {
                assert_eq!(order, owners.iter().map(String::as_str).collect::<Vec<_>>(), "primary first, never the idle local shard");
            }
            // Nobody reachable: only what this node holds itself.
            let alone = directory.lookup_order(partition, |_| false);
            assert_eq!(alone.is_empty(), !owners.contains(&"a".to_owned()));
        }
    }

    #[test]
    fn a_loading_owner_asks_the_others_and_the_previous_owners_first() {
        let mut directory = directory("c", &["a", "b", "c"], LocalState::Loading, Some(&["a", "b", "d"]));
        for partition in 0..8 {
            let order = directory.lookup_order(partition, |_| true);
            assert_eq!(order.last(), Some(&"c"), "its own shard last while loading: {order:?}");
            for owner in directory.previous.as_ref().expect("previous map").owners_of(partition) {
                let alive = owner != "d";
                assert_eq!(order.contains(&owner.as_str()), alive, "old owner {owner} asked for partition {partition} while alive: {order:?}");
            }
            assert!(!directory.serves(partition), "a loading shard does not answer other nodes");
            assert!(directory.stores(partition), "but it stores new entries");
        }
        directory.previous = None;
        assert!(directory.lookup_order(0, |_| true).len() >= 2);
    }

    #[test]
    fn a_leaving_node_still_answers_but_inserts_go_to_the_owners() {
        let directory = directory("a", &["b", "c"], LocalState::Leaving, Some(&["a", "b", "c"]));
        for partition in 0..8 {
            assert!(directory.serves(partition));
            let inserts = directory.insert_order(partition, |_| true);
            assert_eq!(inserts[0], "a");
            assert_eq!(inserts.len(), 3, "both owners and the leaving shard: {inserts:?}");
        }
    }
}
