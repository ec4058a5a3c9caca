//! The ring: which members own which partition. A partition's owners are the top-R members by
//! rendezvous hashing (R = the replication factor, capped by the cluster's size). The hash is
//! fixed and seedless (xxh3), never `RandomState`, so every node computes the same map from the
//! same member list, whatever order it learnt the members in.
//!
//! [`PartitionMap`] is a pure, versioned value computed from a member list; the code that moves
//! data reacts to a new one. Budget owners (the cluster's part 2) use the same ring.

use std::collections::BTreeSet;

use xxhash_rust::xxh3::Xxh3;

/// The owners of `partition` among `members`: the `replication` members with the highest
/// rendezvous weight, best first (fewer when the cluster is smaller).
pub fn owners<S: AsRef<str>>(partition: u32, members: &[S], replication: usize) -> Vec<&str> {
    top_by_weight(members, replication, |hasher| hasher.update(&partition.to_le_bytes()))
}

/// The owners of a named thing (a budget's scope) among `members`, best first: the same
/// rendezvous hash over the key's bytes.
pub fn owners_of_key<'a, S: AsRef<str>>(key: &str, members: &'a [S], replication: usize) -> Vec<&'a str> {
    top_by_weight(members, replication, |hasher| {
        hasher.update(b"\0");
        hasher.update(key.as_bytes());
    })
}

/// The `replication` members with the highest weight, xxh3 of the member's name followed by
/// what `thing` adds, best first; ties broken by name, duplicates dropped.
fn top_by_weight<S: AsRef<str>>(members: &[S], replication: usize, thing: impl Fn(&mut Xxh3)) -> Vec<&str> {
    let mut weighted: Vec<(u64, &str)> = members
        .iter()
        .map(|member| {
            let member = member.as_ref();
            let mut hasher = Xxh3::new();
            hasher.update(member.as_bytes());
            thing(&mut hasher);
            (hasher.digest(), member)
        })
        .collect();
    weighted.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    weighted.dedup_by(|a, b| a.1 == b.1);
    weighted.into_iter().take(replication).map(|(_, member)| member).collect()
}

/// Every partition's owners for one member list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMap {
    /// Increases with every new member list a node computes a map for (local to the node).
    pub version: u64,
    /// The members the map was computed from, sorted.
    pub members: Vec<String>,
    /// Owners of each partition, best first.
    pub owners: Vec<Vec<String>>,
}

impl PartitionMap {
    /// The map of `partitions` partitions over `members` with `replication` owners each.
    pub fn compute(version: u64, members: impl IntoIterator<Item = String>, partitions: u32, replication: usize) -> Self {
        let members: Vec<String> = members.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        let owners = (0..partitions)
            .map(|partition| owners(partition, &members, replication).into_iter().map(str::to_owned).collect())
            .collect();
        Self { version, members, owners }
    }

    /// The owners of `partition`, best first (empty for a partition out of range).
    pub fn owners_of(&self, partition: u32) -> &[String] {
        self.owners.get(partition as usize).map_or(&[], Vec::as_slice)
    }

    /// True when `member` owns `partition`.
    pub fn owns(&self, member: &str, partition: u32) -> bool {
        self.owners_of(partition).iter().any(|owner| owner == member)
    }

    /// The partitions `member` owns.
    pub fn owned_by(&self, member: &str) -> Vec<u32> {
        (0..self.owners.len() as u32).filter(|partition| self.owns(member, *partition)).collect()
    }

    /// Partition-replicas placed differently in `other`: the owner slots gained there.
    pub fn moved_to(&self, other: &Self) -> usize {
        self.owners
            .iter()
            .zip(&other.owners)
            .map(|(before, after)| after.iter().filter(|owner| !before.contains(owner)).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PARTITIONS: u32 = 64;

    fn members(count: usize) -> Vec<String> {
        (0..count).map(|n| format!("node-{n}")).collect()
    }

    proptest! {
        #[test]
        fn owners_are_distinct_members_capped_by_cluster_size(partition in 0..PARTITIONS, count in 1usize..8, replication in 1usize..4) {
            let members = members(count);
            let owners = owners(partition, &members, replication);
            prop_assert_eq!(owners.len(), replication.min(count));
            let mut unique = owners.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), owners.len());
            prop_assert!(owners.iter().all(|owner| members.iter().any(|member| member == owner)));
        }

        #[test]
        fn the_same_members_in_any_order_give_the_same_map(count in 1usize..10, seed in any::<u64>()) {
            let members = members(count);
            let mut shuffled = members.clone();
            // A deterministic shuffle from the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let a = PartitionMap::compute(1, members, PARTITIONS, 2);
            let b = PartitionMap::compute(1, shuffled, PARTITIONS, 2);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn adding_a_member_moves_about_p_r_over_n_replicas(count in 2usize..10) {
            let before = PartitionMap::compute(1, members(count), PARTITIONS, 2);
            let after = PartitionMap::compute(2, members(count + 1), PARTITIONS, 2);
            let moved = before.moved_to(&after);
            // Every moved slot goes to the new member, and it gets about its fair share.
            let new_member = format!("node-{count}");
            prop_assert_eq!(moved, after.owned_by(&new_member).len());
            let expected = (PARTITIONS as usize * 2) as f64 / (count + 1) as f64;
            prop_assert!((moved as f64) < expected * 2.0 + 4.0, "moved {} expected about {}", moved, expected);
            prop_assert!(moved > 0);
        }

        #[test]
        fn removing_a_member_moves_only_its_own(count in 3usize..10, gone in 0usize..10) {
            let gone = gone % count;
            let all = members(count);
            let before = PartitionMap::compute(1, all.clone(), PARTITIONS, 2);
            let survivors: Vec<String> = all.iter().filter(|member| **member != all[gone]).cloned().collect();
            let after = PartitionMap::compute(2, survivors, PARTITIONS, 2);
            prop_assert_eq!(before.moved_to(&after), before.owned_by(&all[gone]).len());
            for partition in 0..PARTITIONS {
                let kept: Vec<&String> = before.owners_of(partition).iter().filter(|owner| **owner != all[gone]).collect();
                for owner in kept {
                    prop_assert!(after.owns(owner, partition), "a surviving owner keeps its partition");
                }
            }
        }

        #[test]
        fn losing_an_owner_promotes_the_replica(partition in 0..PARTITIONS, count in 3usize..8) {
            let members = members(count);
            let before: Vec<String> = owners(partition, &members, 2).into_iter().map(str::to_owned).collect();
            let without_first: Vec<String> = members.iter().filter(|member| **member != before[0]).cloned().collect();
            let after = owners(partition, &without_first, 2);
            prop_assert_eq!(after[0], before[1].as_str());
        }
    }

    #[test]
    fn a_single_member_owns_everything_once() {
        let map = PartitionMap::compute(1, ["solo".to_owned()], PARTITIONS, 2);
        assert_eq!(map.owned_by("solo").len(), PARTITIONS as usize);
        assert!(map.owners.iter().all(|owners| owners.len() == 1));
    }
}
