//! Labelled question pairs (`{"a": str, "b": str, "duplicate": bool}` a line) and their
//! deterministic split into fitting, validation and test parts.
//!
//! Pairs are grouped with union-find over their question texts: both questions of a pair, and
//! every pair sharing a question with it, land in the same component, and a whole component goes
//! to one part. No question of the test part is ever seen while fitting. A component's part comes
//! from a hash of its smallest text, so the split depends on the data alone, not on line order.
//!
//! The train split is also cut into [`TRAIN_FOLDS`] folds of the validation part's size, by the
//! same hash; the last fold is the validation part itself. Fitting once per fold, with that fold
//! held out, scores every train pair by a model that never saw it (cross-fitting).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use xxhash_rust::xxh3::xxh3_64;

/// Percent of components (by hash) used to fit the policy's weights.
pub const FIT_PERCENT: u64 = 48;
/// Percent of components held out of fitting but within train, for choosing and calibrating.
pub const VALIDATION_PERCENT: u64 = 12;
/// Folds of the train split, each the validation part's size; the last is the validation part.
pub const TRAIN_FOLDS: usize = ((FIT_PERCENT + VALIDATION_PERCENT) / VALIDATION_PERCENT) as usize;

/// One labelled pair of questions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct LabelledPair {
    /// The question stored in the cache.
    pub a: String,
    /// The question looked up.
    pub b: String,
    /// Whether the two ask the same thing.
    pub duplicate: bool,
}

/// Where a pair belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SplitPart {
    /// Fits the weights (about 48% of pairs).
    Fit,
    /// Within train but held out of fitting: early stopping, variant choice, calibration (about 12%).
    Validation,
    /// Never fitted on; the reported figures (about 40%).
    Test,
}

impl SplitPart {
    /// Whether the part belongs to the train split (fit or validation).
    pub fn is_train(self) -> bool {
        matches!(self, SplitPart::Fit | SplitPart::Validation)
    }
}

/// Labelled pairs with their split parts and the file's distinct texts.
#[derive(Clone, Debug)]
pub struct PairSet {
    /// The pairs, in file order.
    pub pairs: Vec<LabelledPair>,
    /// The part of each pair, parallel to `pairs`.
    pub parts: Vec<SplitPart>,
    /// The hash bucket (`0..100`) of each pair's component, parallel to `pairs`.
    buckets: Vec<u8>,
    /// Every distinct text, in order of first appearance (`a` before `b`).
    pub texts: Vec<String>,
    /// Index in `texts` of each pair's `a` and `b`, parallel to `pairs`.
    pub text_indices: Vec<(usize, usize)>,
    /// xxh3 of the file's bytes: identifies the data for the embedding cache.
    pub content_hash: u64,
}

impl PairSet {
    /// Reads and splits a JSON-lines file of labelled pairs (blank lines are skipped).
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("failed to read pairs file {}", path.display()))?;
        let text = std::str::from_utf8(&bytes)
            .with_context(|| format!("pairs file {} is not UTF-8", path.display()))?;
        let mut pairs = Vec::new();
        for (line_number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let pair: LabelledPair = serde_json::from_str(line).with_context(|| {
                format!(
                    "line {} of {} is not a labelled pair",
                    line_number + 1,
                    path.display()
                )
            })?;
            pairs.push(pair);
        }
        if pairs.is_empty() {
            bail!("pairs file {} holds no pairs", path.display());
        }
        Ok(Self::from_pairs(pairs, xxh3_64(&bytes)))
    }

    /// Splits pairs already in memory; `content_hash` identifies them.
    pub fn from_pairs(pairs: Vec<LabelledPair>, content_hash: u64) -> Self {
        let mut text_index: HashMap<&str, usize> = HashMap::new();
        let mut texts: Vec<String> = Vec::new();
        let mut text_indices = Vec::with_capacity(pairs.len());
        for pair in &pairs {
            let mut indices = [0_usize; 2];
            for (slot, text) in [pair.a.as_str(), pair.b.as_str()].into_iter().enumerate() {
                let next = texts.len();
                let index = *text_index.entry(text).or_insert(next);
                if index == next {
                    texts.push(text.to_owned());
                }
                indices[slot] = index;
            }
            text_indices.push((indices[0], indices[1]));
        }
        let mut components = UnionFind::new(texts.len());
        for &(a, b) in &text_indices {
            components.union(a, b);
        }
        // The smallest text of each component names it.
        let mut smallest: HashMap<usize, usize> = HashMap::new();
        for index in 0..texts.len() {
            let root = components.find(index);
            let entry = smallest.entry(root).or_insert(index);
            if texts[index] < texts[*entry] {
                *entry = index;
            }
        }
        let buckets: Vec<u8> = text_indices
            .iter()
            .map(|&(a, _)| {
                let root = components.find(a);
                let name = smallest
                    .get(&root)
                    .map_or("", |&index| texts[index].as_str());
                bucket_of(name)
            })
            .collect();
        Self {
            pairs,
            parts: buckets.iter().map(|&bucket| part_of(bucket)).collect(),
            buckets,
            texts,
            text_indices,
            content_hash,
        }
    }

    /// Indices of the pairs in `part`, in file order.
    pub fn indices_of(&self, part: SplitPart) -> Vec<usize> {
        (0..self.pairs.len())
            .filter(|&index| self.parts[index] == part)
            .collect()
    }

    /// Indices of the train pairs (fit and validation), in file order.
    pub fn train_indices(&self) -> Vec<usize> {
        (0..self.pairs.len())
            .filter(|&index| self.parts[index].is_train())
            .collect()
    }

    /// The same pairs with train fold `fold` (`0..TRAIN_FOLDS`) as the validation part and the
    /// rest of the train split as the fit part; the test part is unchanged. The last fold gives
    /// the split as read.
    pub fn with_validation_fold(&self, fold: usize) -> anyhow::Result<Self> {
        if fold >= TRAIN_FOLDS {
            bail!(
                "train fold {fold} does not exist: there are {TRAIN_FOLDS} (0 to {})",
                TRAIN_FOLDS - 1
            );
        }
        let mut set = self.clone();
        for (part, &bucket) in set.parts.iter_mut().zip(&self.buckets) {
            if part.is_train() {
                *part = if fold_of(bucket) == fold {
                    SplitPart::Validation
                } else {
                    SplitPart::Fit
                };
            }
        }
        Ok(set)
    }
}

/// The hash bucket (`0..100`) of a component named by its smallest text.
fn bucket_of(component_name: &str) -> u8 {
    (xxh3_64(component_name.as_bytes()) % 100) as u8
}

/// The train fold of a train bucket.
fn fold_of(bucket: u8) -> usize {
    (u64::from(bucket) / VALIDATION_PERCENT) as usize
}

/// The part of a component by its bucket.
fn part_of(bucket: u8) -> SplitPart {
    let bucket = u64::from(bucket);
    if bucket < FIT_PERCENT {
        SplitPart::Fit
    } else if bucket < FIT_PERCENT + VALIDATION_PERCENT {
        SplitPart::Validation
    } else {
        SplitPart::Test
    }
}

/// Disjoint sets over `0..n` with path halving and union by size.
struct UnionFind {
    parents: Vec<usize>,
    sizes: Vec<usize>,
}

impl UnionFind {
    fn new(count: usize) -> Self {
        Self {
            parents: (0..count).collect(),
            sizes: vec![1; count],
        }
    }

    fn find(&mut self, mut index: usize) -> usize {
        while self.parents[index] != index {
            self.parents[index] = self.parents[self.parents[index]];
            index = self.parents[index];
        }
        index
    }

    fn union(&mut self, left: usize, right: usize) {
        let (mut left, mut right) = (self.find(left), self.find(right));
        if left == right {
            return;
        }
        if self.sizes[left] < self.sizes[right] {
            std::mem::swap(&mut left, &mut right);
        }
        self.parents[right] = left;
        self.sizes[left] += self.sizes[right];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &str, b: &str, duplicate: bool) -> LabelledPair {
        LabelledPair {
            a: a.into(),
            b: b.into(),
            duplicate,
        }
    }

    #[test]
    fn pairs_sharing_a_question_share_a_part() {
        let mut pairs = Vec::new();
        for index in 0..200 {
            pairs.push(pair(
                &format!("question {index}"),
                &format!("other {index}"),
                index % 2 == 0,
            ));
            pairs.push(pair(
                &format!("other {index}"),
                &format!("third {index}"),
                false,
            ));
        }
        let set = PairSet::from_pairs(pairs, 0);
        for index in 0..200 {
            assert_eq!(set.parts[2 * index], set.parts[2 * index + 1]);
        }
        assert_eq!(set.texts.len(), 600);
        let test_count = set.indices_of(SplitPart::Test).len();
        assert!(
            test_count > 80 && test_count < 240,
            "about 40% of components are test, got {test_count} of 400 pairs"
        );
    }

    #[test]
    fn the_split_does_not_depend_on_line_order() {
        let pairs: Vec<_> = (0..100)
            .map(|index| pair(&format!("q{index}"), &format!("r{index}"), true))
            .collect();
        let forward = PairSet::from_pairs(pairs.clone(), 0);
        let mut reversed_pairs = pairs;
        reversed_pairs.reverse();
        let reversed = PairSet::from_pairs(reversed_pairs, 0);
        for index in 0..100 {
            assert_eq!(forward.parts[index], reversed.parts[99 - index]);
        }
    }

    #[test]
    fn each_train_pair_is_held_out_by_exactly_one_fold_and_the_last_fold_is_the_split_as_read() {
        let pairs: Vec<_> = (0..500)
            .map(|index| pair(&format!("q{index}"), &format!("r{index}"), index % 3 == 0))
            .collect();
        let set = PairSet::from_pairs(pairs, 0);
        let folds: Vec<PairSet> = (0..TRAIN_FOLDS)
            .map(|fold| set.with_validation_fold(fold).unwrap())
            .collect();
        for index in 0..set.pairs.len() {
            let held_out = folds
                .iter()
                .filter(|fold| fold.parts[index] == SplitPart::Validation)
                .count();
            if set.parts[index].is_train() {
                assert_eq!(held_out, 1, "pair {index}");
            } else {
                assert_eq!(held_out, 0, "pair {index}");
                assert!(
                    folds
                        .iter()
                        .all(|fold| fold.parts[index] == SplitPart::Test)
                );
            }
        }
        assert_eq!(folds[TRAIN_FOLDS - 1].parts, set.parts);
        for fold in &folds[..TRAIN_FOLDS - 1] {
            let held_out = fold.indices_of(SplitPart::Validation).len();
            assert!(
                held_out > 20 && held_out < 110,
                "about 12% of 500 pairs, got {held_out}"
            );
        }
        let error = set
            .with_validation_fold(TRAIN_FOLDS)
            .unwrap_err()
            .to_string();
        assert!(error.contains("train fold 5 does not exist"), "{error}");
    }
}
