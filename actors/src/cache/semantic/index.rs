//! A USearch HNSW index over unit vectors (cosine metric) with the bookkeeping USearch needs:
//! capacity is reserved ahead of `add` (a new index holds nothing, a loaded one holds exactly its
//! count), and similarity is reported as `1 − distance`. One `CacheShard` actor owns each index
//! and calls it from one thread at a time, so USearch's per-thread slots never run out.

use std::path::Path;

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// An index failure, as USearch reported it.
#[derive(Debug, thiserror::Error)]
#[error("vector index: {0}")]
pub struct IndexError(String);

fn error(what: &str, cause: impl std::fmt::Display) -> IndexError {
    IndexError(format!("{what}: {cause}"))
}

/// The index.
pub struct VectorIndex {
    index: Index,
    dimensions: usize,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex").field("dimensions", &self.dimensions).field("size", &self.index.size()).finish()
    }
}

fn options(dimensions: usize) -> IndexOptions {
    IndexOptions {
        dimensions,
        metric: MetricKind::Cos,
        quantization: ScalarKind::F32,
        connectivity: 0,
        expansion_add: 0,
        expansion_search: 0,
        multi: false,
    }
}

impl VectorIndex {
    /// An empty index of `dimensions`-long vectors.
    pub fn new(dimensions: usize) -> Result<Self, IndexError> {
        let index = Index::new(&options(dimensions)).map_err(|cause| error("create", cause))?;
        index.reserve(64).map_err(|cause| error("reserve", cause))?;
        Ok(Self { index, dimensions })
    }

    /// Loads an index saved with [`VectorIndex::save`].
    pub fn load(path: &Path, dimensions: usize) -> Result<Self, IndexError> {
        let index = Index::new(&options(dimensions)).map_err(|cause| error("create", cause))?;
        index.load(&path.to_string_lossy()).map_err(|cause| error("load", cause))?;
        if index.dimensions() != dimensions {
            return Err(IndexError(format!("{} holds {}-dimensional vectors, not {dimensions}", path.display(), index.dimensions())));
        }
        Ok(Self { index, dimensions })
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.index.size()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `vector` under `key`, growing the reservation when full.
    pub fn add(&mut self, key: u64, vector: &[f32]) -> Result<(), IndexError> {
        if vector.len() != self.dimensions {
            return Err(IndexError(format!("vector has {} dimensions, the index {}", vector.len(), self.dimensions)));
        }
        if self.index.size() + 1 > self.index.capacity() {
            let grown = (self.index.capacity() * 2).max(64);
            self.index.reserve(grown).map_err(|cause| error("reserve", cause))?;
        }
        self.index.add(key, vector).map_err(|cause| error("add", cause))
    }

    /// Removes `key` (absent keys are ignored).
    pub fn remove(&mut self, key: u64) -> Result<(), IndexError> {
        self.index.remove(key).map(|_| ()).map_err(|cause| error("remove", cause))
    }

    /// The `count` nearest keys to `vector` with their cosine similarity, most similar first.
    pub fn search(&self, vector: &[f32], count: usize) -> Result<Vec<(u64, f32)>, IndexError> {
        if self.index.size() == 0 {
            return Ok(Vec::new());
        }
        let matches = self.index.search(vector, count).map_err(|cause| error("search", cause))?;
        Ok(matches.keys.into_iter().zip(matches.distances).map(|(key, distance)| (key, 1.0 - distance)).collect())
    }

    /// The vector stored under `key`, if any.
    pub fn get(&self, key: u64) -> Option<Vec<f32>> {
        if !self.index.contains(key) {
            return None;
        }
        let mut vector = vec![0.0; self.dimensions];
        match self.index.get(key, &mut vector) {
            Ok(found) if found > 0 => Some(vector),
            _ => None,
        }
    }

    /// True when `key` is held.
    pub fn contains(&self, key: u64) -> bool {
        self.index.contains(key)
    }

    /// Writes the index to `path`.
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        self.index.save(&path.to_string_lossy()).map_err(|cause| error("save", cause))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(values: &[f32]) -> Vec<f32> {
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        values.iter().map(|v| v / norm).collect()
    }

    #[test]
    fn finds_the_nearest_grows_past_its_reservation_and_survives_a_save() {
        let mut index = VectorIndex::new(3).expect("index");
        for key in 0..200u64 {
            let angle = key as f32 / 200.0;
            index.add(key, &unit(&[angle.cos(), angle.sin(), 0.1])).expect("add");
        }
        assert_eq!(index.len(), 200);
        let found = index.search(&unit(&[1.0, 0.0, 0.1]), 3).expect("search");
        assert_eq!(found[0].0, 0);
        assert!(found[0].1 > 0.999, "{found:?}");
        let stored = index.get(5).expect("key 5 is held");
        let angle = 5.0f32 / 200.0;
        assert!((stored[0] - unit(&[angle.cos(), angle.sin(), 0.1])[0]).abs() < 1e-6);
        assert!(index.get(5000).is_none());
        index.remove(0).expect("remove");
        assert_ne!(index.search(&unit(&[1.0, 0.0, 0.1]), 1).expect("search")[0].0, 0);
        assert!(index.add(7, &[1.0, 0.0]).is_err(), "wrong dimensions");

        let path = std::env::temp_dir().join(format!("switchyard-index-{}.usearch", std::process::id()));
        index.save(&path).expect("save");
        let mut loaded = VectorIndex::load(&path, 3).expect("load");
        assert_eq!(loaded.len(), 199);
        loaded.add(1000, &unit(&[0.0, 0.0, 1.0])).expect("add after load needs a reservation");
        assert!(VectorIndex::load(&path, 4).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
