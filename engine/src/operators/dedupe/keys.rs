//! The keys a dedupe has seen: their bytes in one arena, found through a hash table of small
//! slots (where the key's bytes are, what the dedupe knows of it).
//!
//! Why not a `HashMap<Box<[u8]>, _>`: a box costs one allocation per new key, a pointer per
//! slot and a free per forgotten key. Here a new key is appended to the arena; the table's
//! control bytes (7 bits of each hash) rule out nearly every other key without reading the
//! arena, so it is read for real matches (duplicates) and, rarely, a 1-in-128 look-alike.
//! The hash is not stored: it is computed again from the arena only when the table grows.
//! Keys the watermark forgets leave holes in the arena; once the holes outweigh the live keys
//! the arena is rewritten.

use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

/// One key: its bytes' place in the arena, and its value (16 bytes before the value).
#[derive(Debug)]
struct Slot<V> {
    start: usize,
    len: usize,
    value: V,
}

impl<V> Slot<V> {
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.start..self.start + self.len]
    }
}

/// A hash map from byte keys to `V`, with the keys' bytes in one arena.
#[derive(Debug)]
pub struct KeyTable<V> {
    slots: HashTable<Slot<V>>,
    arena: Vec<u8>,
    /// Bytes of `arena` that belong to keys still held.
    live_bytes: usize,
    hasher: DefaultHashBuilder,
}

/// The arena is rewritten only above this size, so a small state never churns.
const MIN_ARENA_TO_COMPACT: usize = 1 << 20;

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable {
            slots: HashTable::new(),
            arena: Vec::new(),
            live_bytes: 0,
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<V> KeyTable<V> {
    /// The value held for `key`, inserting `new()` first when the key is not held yet;
    /// the flag says whether it was inserted.
    pub fn get_or_insert_with(&mut self, key: &[u8], new: impl FnOnce() -> V) -> (&mut V, bool) {
        let (arena, hasher) = (&self.arena, &self.hasher);
        let hash = hasher.hash_one(key);
        let entry = self.slots.entry(
            hash,
            |slot| slot.key(arena) == key,
            |slot| hasher.hash_one(slot.key(arena)),
        );
        match entry {
            Entry::Occupied(occupied) => (&mut occupied.into_mut().value, false),
            Entry::Vacant(vacant) => {
                let start = self.arena.len();
                self.arena.extend_from_slice(key);
                self.live_bytes += key.len();
                let slot = vacant.insert(Slot {
                    start,
                    len: key.len(),
                    value: new(),
                });
                (&mut slot.into_mut().value, true)
            }
        }
    }

    /// Keeps the keys for which `keep` returns true (it may change their values) and forgets
    /// the rest.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        let mut freed = 0;
        self.slots.retain(|slot| {
            let kept = keep(&mut slot.value);
            if !kept {
                freed += slot.len;
            }
            kept
        });
        self.live_bytes -= freed;
        let holes = self.arena.len() - self.live_bytes;
        if self.arena.len() > MIN_ARENA_TO_COMPACT && holes > self.live_bytes {
            self.compact_arena();
        }
    }

    /// Rewrites the arena with only the bytes of keys still held.
    fn compact_arena(&mut self) {
        let mut arena = Vec::with_capacity(self.live_bytes + self.live_bytes / 2);
        for slot in self.slots.iter_mut() {
            let start = arena.len();
            arena.extend_from_slice(slot.key(&self.arena));
            slot.start = start;
        }
        self.arena = arena;
    }

    /// Every key with its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.slots
            .iter()
            .map(|slot| (slot.key(&self.arena), &slot.value))
    }

    /// Every value, mutably, in the same order as [`KeyTable::iter`] while nothing changes.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots.iter_mut().map(|slot| &mut slot.value)
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.arena.clear();
        self.live_bytes = 0;
    }

    /// Bytes of the keys held (their own bytes, without the arena's holes).
    pub fn key_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes held: the arena (holes included) and the table's slots and control bytes.
    pub fn memory_size(&self) -> usize {
        self.arena.capacity() + self.slots.capacity() * (std::mem::size_of::<Slot<V>>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_32_bytes_with_the_dedupes_value() {
        // Each key costs its bytes in the arena plus one slot and one control byte (at a
        // load of 7/16 to 7/8): the aim is under 100 bytes beyond the key's own.
        assert_eq!(std::mem::size_of::<Slot<[u64; 2]>>(), 32);
    }

    #[test]
    fn a_key_is_found_again_by_its_bytes() {
        let mut table = KeyTable::default();
        let (value, inserted) = table.get_or_insert_with(b"a", || 1);
        assert!(inserted);
        *value += 10;
        assert_eq!(table.get_or_insert_with(b"a", || 99), (&mut 11, false));
        assert_eq!(table.get_or_insert_with(b"ab", || 2), (&mut 2, true));
        assert_eq!(table.get_or_insert_with(b"", || 3), (&mut 3, true));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn forgotten_keys_are_compacted_out_of_the_arena_and_the_rest_stay_findable() {
        let mut table = KeyTable::default();
        let key = |i: u64| format!("key-{i:032}").into_bytes();
        for i in 0..100_000 {
            table.get_or_insert_with(&key(i), || i);
        }
        let before = table.arena.len();
        table.retain(|v| *v % 10 == 0);
        assert_eq!(table.len(), 10_000);
        assert!(table.arena.len() < before / 5, "the arena was rewritten");
        for i in 0..100_000 {
            let (value, inserted) = table.get_or_insert_with(&key(i), || u64::MAX);
            assert_eq!(inserted, i % 10 != 0, "key {i}");
            if !inserted {
                assert_eq!(*value, i);
            }
        }
        let mut seen: Vec<(Vec<u8>, u64)> = table.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
        seen.sort();
        assert_eq!(seen.len(), 100_000);
        assert_eq!(seen[0], (key(0), 0));
    }
}
