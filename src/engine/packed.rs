//! Building the planner's maps with full B-tree nodes.
//!
//! A run's maps (the base, the head's manifest, the branch's files) get their keys in order,
//! because manifests, bases and `git ls-tree` are sorted. `BTreeMap::insert` in ascending order
//! splits each full node in the middle and never fills the left half again, so such a map ends
//! about half empty: at 100,000 keys, some 10 MiB of every map is empty slots. Entries that
//! arrive in order are gathered in a sorted batch and added with `BTreeMap::append`, which
//! builds packed nodes. From the first entry out of order on, the map falls back to plain
//! inserts, so any input order gives the same map, only less packed.

use std::collections::BTreeMap;

/// How many entries are gathered before they are appended. Each append rebuilds the map, so
/// the batches are large: 100,000 keys take 13 appends.
const BATCH: usize = 8192;

/// A `BTreeMap` under construction; [`PackedMap::finish`] gives it.
#[derive(Debug)]
pub struct PackedMap<K, V> {
    map: BTreeMap<K, V>,
    /// Strictly ascending, and every key greater than every key of `map`.
    batch: Vec<(K, V)>,
    /// Whether every key so far came in ascending order.
    ordered: bool,
}

impl<K: Ord, V> Default for PackedMap<K, V> {
    fn default() -> Self {
        PackedMap { map: BTreeMap::new(), batch: Vec::new(), ordered: true }
    }
}

impl<K: Ord, V> PackedMap<K, V> {
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).or_else(|| self.batch.binary_search_by(|(k, _)| k.cmp(key)).ok().map(|i| &self.batch[i].1))
    }

    /// Adds `key` unless it is there already; gives the value back when it is.
    pub fn insert_new(&mut self, key: K, value: V) -> Result<(), (K, V)> {
        if self.in_order(&key) {
            self.push(key, value);
            return Ok(());
        }
        if self.get(&key).is_some() {
            return Err((key, value));
        }
        self.map.insert(key, value);
        Ok(())
    }

    /// Adds `key`, replacing its value if it is there already.
    pub fn insert(&mut self, key: K, value: V) {
        if self.in_order(&key) {
            self.push(key, value);
        } else {
            self.map.insert(key, value);
        }
    }

    pub fn finish(mut self) -> BTreeMap<K, V> {
        self.flush();
        self.map
    }

    /// Whether `key` is greater than every key so far, while the input is still in order. The
    /// first key that is not ends batching: the batch is appended, and inserts follow.
    fn in_order(&mut self, key: &K) -> bool {
        if !self.ordered {
            return false;
        }
        let last = self.batch.last().map(|(k, _)| k).or_else(|| self.map.last_key_value().map(|(k, _)| k));
        if last.is_none_or(|last| key > last) {
            return true;
        }
        self.ordered = false;
        self.flush();
        self.batch = Vec::new();
        false
    }

    fn push(&mut self, key: K, value: V) {
        if self.batch.capacity() == 0 {
            self.batch.reserve_exact(BATCH);
        }
        self.batch.push((key, value));
        if self.batch.len() == BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        // Sorted and unique already, so `from_iter` only checks the order; both it and
        // `append` build full nodes.
        let mut tail: BTreeMap<K, V> = self.batch.drain(..).collect();
        self.map.append(&mut tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(keys: &[u32]) -> (BTreeMap<u32, u32>, Vec<u32>) {
        let mut m = PackedMap::default();
        let mut refused = Vec::new();
        for (i, &k) in keys.iter().enumerate() {
            if let Err((k, _)) = m.insert_new(k, i as u32) {
                refused.push(k);
            }
        }
        (m.finish(), refused)
    }

    #[test]
    fn any_order_gives_the_same_map_as_inserts() {
        let ascending: Vec<u32> = (0..20_000).collect();
        let mut shuffled = ascending.clone();
        // A fixed permutation: ascending for a while, then out of order, with repeats.
        shuffled[15_000..].reverse();
        shuffled.extend([3, 19_999, 12_345]);
        for keys in [ascending, shuffled] {
            let (map, refused) = build(&keys);
            let mut want = BTreeMap::new();
            let mut want_refused = Vec::new();
            for (i, &k) in keys.iter().enumerate() {
                match want.entry(k) {
                    std::collections::btree_map::Entry::Occupied(_) => want_refused.push(k),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(i as u32);
                    }
                }
            }
            assert_eq!(map, want);
            assert_eq!(refused, want_refused);
        }
    }

    #[test]
    fn get_sees_the_batch_and_insert_replaces() {
        let mut m = PackedMap::default();
        for k in 0..10u32 {
            m.insert(k, k);
        }
        assert_eq!(m.get(&7), Some(&7));
        assert_eq!(m.insert_new(7, 70), Err((7, 70)));
        m.insert(7, 77);
        m.insert(20, 20);
        let map = m.finish();
        assert_eq!(map.get(&7), Some(&77));
        assert_eq!(map.len(), 11);
    }
}
