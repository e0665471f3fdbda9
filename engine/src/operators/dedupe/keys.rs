//! The keys a dedupe has seen: their bytes in an arena of chunks (`arena`), found through a
//! hash table of small slots (where the key's bytes are, 32 bits of its hash, what the dedupe
//! knows of it).
//!
//! Why not a `HashMap<Box<[u8]>, _>`: a box costs one allocation per new key, a pointer per
//! slot and a free per forgotten key. Here a new key is appended to the arena; the table's
//! control bytes (7 bits of each hash) and the slot's 32 bits of hash rule out nearly every
//! other key without reading the arena, so it is read for real matches (duplicates) only.
//! The stored hash also lets the table grow or clean out its tombstones without reading and
//! hashing every key again (one cache miss per key, tens of milliseconds an epoch at 400,000
//! keys).

use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::arena::{KeyArena, KeyPlace, KeyTooLong};

/// One key: its bytes' place in the arena, 32 bits of its hash, and its value (16 bytes
/// before the value).
#[derive(Debug)]
struct Slot<V> {
    place: KeyPlace,
    hash: u32,
    value: V,
}

/// The table's 64-bit hash of a key, from the 32 bits a slot keeps: spread over all 64 bits
/// (the table takes the bucket from the low bits and its control byte from the top 7).
#[inline]
fn table_hash(hash: u32) -> u64 {
    u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A hash map from byte keys to `V`, with the keys' bytes in one arena.
#[derive(Debug)]
pub struct KeyTable<V> {
    slots: HashTable<Slot<V>>,
    arena: KeyArena,
    hasher: DefaultHashBuilder,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable {
            slots: HashTable::new(),
            arena: KeyArena::default(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<V> KeyTable<V> {
    /// The value held for `key` when the key is held already; otherwise `value` is inserted
    /// for it and `None` returned. The inserted value is not handed back on purpose: the
    /// caller has it, and reading the fresh slot back would wait for its cache line (the
    /// largest single cost of offering a new key in a table larger than the cache).
    pub fn get_or_insert(&mut self, key: &[u8], value: V) -> Result<Option<&mut V>, KeyTooLong> {
        // Truncated on purpose: 32 bits are kept in the slot and spread again.
        let hash = self.hasher.hash_one(key) as u32;
        let arena = &self.arena;
        let entry = self.slots.entry(
            table_hash(hash),
            |slot| slot.hash == hash && arena.get(slot.place) == key,
            |slot| table_hash(slot.hash),
        );
        match entry {
            Entry::Occupied(occupied) => Ok(Some(&mut occupied.into_mut().value)),
            Entry::Vacant(vacant) => {
                let place = self.arena.push(key)?;
                vacant.insert(Slot { place, hash, value });
                Ok(None)
            }
        }
    }

    /// Keeps the keys for which `keep` returns true (it may change their values) and forgets
    /// the rest.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        let arena = &mut self.arena;
        self.slots.retain(|slot| {
            let kept = keep(&mut slot.value);
            if !kept {
                arena.forget(slot.place);
            }
            kept
        });
        self.arena.reclaim();
        if self.arena.wants_evacuation() {
            self.arena
                .evacuate(self.slots.iter_mut().map(|slot| &mut slot.place));
        }
    }

    /// Every key with its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.slots
            .iter()
            .map(|slot| (self.arena.get(slot.place), &slot.value))
    }

    /// Every value, mutably, in the same order as [`KeyTable::iter`] while nothing changes.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots.iter_mut().map(|slot| &mut slot.value)
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.arena.clear();
    }

    /// Bytes of the keys held (their own bytes, without the arena's holes).
    pub fn key_bytes(&self) -> usize {
        self.arena.live_bytes()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes held: the arena (holes and spare chunks included) and the table's slots and
    /// control bytes.
    pub fn memory_size(&self) -> usize {
        self.arena.memory_size() + self.slots.capacity() * (std::mem::size_of::<Slot<V>>() + 1)
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
        assert_eq!(table.get_or_insert(b"a", 1).unwrap(), None);
        *table.get_or_insert(b"a", 99).unwrap().unwrap() += 10;
        assert_eq!(table.get_or_insert(b"a", 99).unwrap(), Some(&mut 11));
        assert_eq!(table.get_or_insert(b"ab", 2).unwrap(), None);
        assert_eq!(table.get_or_insert(b"ab", 99).unwrap(), Some(&mut 2));
        assert_eq!(table.get_or_insert(b"", 3).unwrap(), None);
        assert_eq!(table.get_or_insert(b"", 99).unwrap(), Some(&mut 3));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn forgotten_keys_are_evacuated_from_the_arena_and_the_rest_stay_findable() {
        let mut table = KeyTable::default();
        let key = |i: u64| format!("key-{i:032}").into_bytes();
        for i in 0..200_000 {
            table.get_or_insert(&key(i), i).unwrap();
        }
        let before = table.memory_size();
        // Nine keys in ten forgotten, spread over the whole arena (out of time order).
        table.retain(|v| *v % 10 == 0);
        assert_eq!(table.len(), 20_000);
        assert!(
            table.arena.memory_size() < before / 5,
            "the keys left were moved out of mostly empty chunks"
        );
        for i in 0..200_000 {
            let held = table.get_or_insert(&key(i), u64::MAX).unwrap().copied();
            assert_eq!(held.is_none(), i % 10 != 0, "key {i}");
            if let Some(value) = held {
                assert_eq!(value, i);
            }
        }
        let mut seen: Vec<(Vec<u8>, u64)> = table.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
        seen.sort();
        assert_eq!(seen.len(), 200_000);
        assert_eq!(seen[0], (key(0), 0));
    }

    #[test]
    fn keys_forgotten_in_arrival_order_free_their_chunks_and_the_table_stays_right() {
        // The watermark's usual pattern: each round adds new keys and forgets the round
        // before last's, many times over (the table fills with tombstones and rehashes).
        let mut table = KeyTable::default();
        let key = |i: u64| format!("{i:x}-event").into_bytes();
        let per_round = 50_000;
        for round in 0..12u64 {
            for i in round * per_round..(round + 1) * per_round {
                assert!(table.get_or_insert(&key(i), round).unwrap().is_none());
            }
            table.retain(|r| *r + 1 >= round);
            let held = table.len() as u64;
            assert_eq!(held, per_round * (round + 1).min(2), "round {round}");
        }
        // Only the last two rounds' keys are held, in a bounded arena.
        assert!(table.arena.memory_size() < 8 << 20);
        for i in 0..12 * per_round {
            let held = table.get_or_insert(&key(i), u64::MAX).unwrap().copied();
            assert_eq!(held.is_some(), i >= 10 * per_round, "key {i}");
            if let Some(round) = held {
                assert_eq!(round, i / per_round);
            }
        }
    }
}
