//! Where a dedupe's key bytes live: appended to chunks of 1 MiB, each chunk counting the keys
//! it still holds, so memory is given back without copying keys around.
//!
//! Keys arrive roughly in event-time order and the watermark forgets them in that order, so a
//! chunk's keys are usually forgotten together: a chunk that holds no key any more is reused
//! for new keys (its pages are already mapped, nothing is zeroed again). Only when keys are
//! forgotten out of order and chunks end up mostly empty are the keys of chunks under half
//! full moved to new chunks ([`KeyArena::evacuate`]).

use std::collections::VecDeque;

/// Bytes of one chunk. A key longer than this gets a chunk of its own size.
const CHUNK_BYTES: usize = 1 << 20;

/// Emptied chunks kept for reuse, at most (16 MiB; and no more than were started since the
/// last round of forgetting, so a shrinking state does not keep them).
const MAX_SPARE_CHUNKS: usize = 16;

/// Below this many bytes in chunks, holes are left alone: a small state never churns.
const MIN_BYTES_TO_EVACUATE: usize = 4 * CHUNK_BYTES;

/// A key's place in the arena: its chunk's number, where it starts, how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPlace {
    chunk: u32,
    offset: u32,
    len: u32,
}

/// A key longer than a [`KeyPlace`] can describe (4 GiB).
#[derive(Debug, thiserror::Error)]
#[error("a deduplication key of {len} bytes is longer than the 4 GiB a key may have")]
pub struct KeyTooLong {
    /// The key's length.
    pub len: usize,
}

impl From<KeyTooLong> for arrow::error::ArrowError {
    fn from(e: KeyTooLong) -> Self {
        arrow::error::ArrowError::InvalidArgumentError(e.to_string())
    }
}

/// One chunk: its bytes and how many of them belong to keys still held.
#[derive(Debug, Default)]
struct Chunk {
    bytes: Vec<u8>,
    live_keys: u32,
    live_bytes: usize,
}

impl Chunk {
    /// Appends a key that fits; returns where it starts. A chunk holds at most
    /// max(`CHUNK_BYTES`, one key's length) bytes, and a key at most 4 GiB: the offset fits.
    fn append(&mut self, key: &[u8]) -> u32 {
        let offset = self.bytes.len() as u32;
        self.bytes.extend_from_slice(key);
        self.live_keys += 1;
        self.live_bytes += key.len();
        offset
    }
}

/// Key bytes in chunks, numbered from `first` (numbers wrap; only their differences count).
#[derive(Debug, Default)]
pub struct KeyArena {
    chunks: VecDeque<Chunk>,
    /// The number of `chunks[0]`.
    first: u32,
    /// Emptied chunks' buffers (cleared, each `CHUNK_BYTES` of capacity), reused first.
    spare: Vec<Vec<u8>>,
    /// Bytes of keys still held.
    live_bytes: usize,
    /// Chunks started since the last [`KeyArena::reclaim`]: about what the next round of
    /// keys will need, so about as many emptied chunks are kept as spares.
    started: usize,
}

impl KeyArena {
    /// The bytes of the key at `place`.
    #[inline]
    pub fn get(&self, place: KeyPlace) -> &[u8] {
        let chunk = &self.chunks[place.chunk.wrapping_sub(self.first) as usize];
        &chunk.bytes[place.offset as usize..place.offset as usize + place.len as usize]
    }

    /// Appends `key`; returns its place.
    pub fn push(&mut self, key: &[u8]) -> Result<KeyPlace, KeyTooLong> {
        let len = u32::try_from(key.len()).map_err(|_| KeyTooLong { len: key.len() })?;
        Ok(self.push_measured(key, len))
    }

    /// [`KeyArena::push`] for a key whose length `len` is known to fit a place.
    fn push_measured(&mut self, key: &[u8], len: u32) -> KeyPlace {
        let last = self
            .first
            .wrapping_add(self.chunks.len() as u32)
            .wrapping_sub(1);
        let roomy = |c: &&mut Chunk| c.bytes.capacity() - c.bytes.len() >= key.len();
        let (chunk, offset) = match self.chunks.back_mut().filter(roomy) {
            Some(chunk) => (last, chunk.append(key)),
            None => {
                let bytes = if key.len() <= CHUNK_BYTES {
                    self.spare
                        .pop()
                        .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES))
                } else {
                    Vec::with_capacity(key.len())
                };
                let mut chunk = Chunk {
                    bytes,
                    ..Chunk::default()
                };
                let offset = chunk.append(key);
                self.chunks.push_back(chunk);
                self.started += 1;
                (last.wrapping_add(1), offset)
            }
        };
        self.live_bytes += key.len();
        KeyPlace { chunk, offset, len }
    }

    /// Forgets the key at `place` (its bytes stay until its chunk is emptied or evacuated;
    /// call [`KeyArena::reclaim`] after a round of forgetting).
    pub fn forget(&mut self, place: KeyPlace) {
        let chunk = &mut self.chunks[place.chunk.wrapping_sub(self.first) as usize];
        chunk.live_keys -= 1;
        chunk.live_bytes -= place.len as usize;
        self.live_bytes -= place.len as usize;
    }

    /// Gives back the chunks that hold no key any more (the chunk being filled excepted):
    /// their buffers become spares, and emptied chunks at the front are dropped.
    pub fn reclaim(&mut self) {
        let keep_spares = self.started.min(MAX_SPARE_CHUNKS);
        self.started = 0;
        let last = self.chunks.len().saturating_sub(1);
        for (i, chunk) in self.chunks.iter_mut().enumerate() {
            if i == last || chunk.live_keys > 0 || chunk.bytes.capacity() == 0 {
                continue;
            }
            let mut bytes = std::mem::take(&mut chunk.bytes);
            if bytes.capacity() == CHUNK_BYTES && self.spare.len() < keep_spares {
                bytes.clear();
                self.spare.push(bytes);
            }
        }
        self.spare.truncate(keep_spares);
        while self.chunks.len() > 1 && self.chunks[0].live_keys == 0 {
            self.chunks.pop_front();
            self.first = self.first.wrapping_add(1);
        }
    }

    /// Whether enough of the arena is holes to move keys out of its emptiest chunks: more
    /// bytes in holes than in keys, above a few chunks.
    pub fn wants_evacuation(&self) -> bool {
        let held: usize = self.chunks.iter().map(|c| c.bytes.len()).sum();
        held > MIN_BYTES_TO_EVACUATE && held - self.live_bytes > self.live_bytes
    }

    /// Moves every key of a chunk under half full (the chunk being filled excepted) to the
    /// end of the arena: `places` yields every key's place, which is updated. Afterwards every
    /// chunk but the one that was being filled and the new last one is at least half full, so
    /// holes never outweigh keys by much.
    pub fn evacuate<'a>(&mut self, places: impl Iterator<Item = &'a mut KeyPlace>) {
        let last = self.chunks.len().saturating_sub(1);
        let leaving: Vec<bool> = self
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| i != last && c.live_bytes * 2 < c.bytes.len())
            .collect();
        let (first, started) = (self.first, self.started);
        let mut key = Vec::new();
        for place in places {
            let index = place.chunk.wrapping_sub(first) as usize;
            if !leaving.get(index).copied().unwrap_or(false) {
                continue;
            }
            key.clear();
            key.extend_from_slice(self.get(*place));
            self.forget(*place);
            *place = self.push_measured(&key, place.len);
        }
        // Chunks filled by moving keys say nothing of the next round's needs.
        self.started = started;
        self.reclaim();
    }

    /// Bytes of the keys held (without the holes).
    pub fn live_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Forgets every key and gives back every chunk.
    pub fn clear(&mut self) {
        *self = KeyArena::default();
    }

    /// Bytes allocated: every chunk (holes included) and the spares.
    pub fn memory_size(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(|c| c.bytes.capacity()).sum();
        chunks + self.spare.iter().map(Vec::capacity).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        format!("key-{i:032}").into_bytes()
    }

    #[test]
    fn keys_are_found_at_their_places_across_chunks() {
        let mut arena = KeyArena::default();
        let places: Vec<KeyPlace> = (0..100_000).map(|i| arena.push(&key(i)).unwrap()).collect();
        assert!(
            arena.chunks.len() > 3,
            "36-byte keys fill several 1 MiB chunks"
        );
        for (i, place) in places.iter().enumerate() {
            assert_eq!(arena.get(*place), key(i).as_slice());
        }
        let long = vec![7u8; CHUNK_BYTES + 1];
        let place = arena.push(&long).unwrap();
        assert_eq!(arena.get(place), long.as_slice());
        assert_eq!(arena.get(places[5]), key(5).as_slice());
    }

    #[test]
    fn emptied_chunks_are_reused_without_moving_the_other_keys() {
        let mut arena = KeyArena::default();
        let places: Vec<KeyPlace> = (0..100_000).map(|i| arena.push(&key(i)).unwrap()).collect();
        let allocated = arena.memory_size();
        // The oldest half is forgotten, as a watermark does.
        for place in &places[..50_000] {
            arena.forget(*place);
        }
        arena.reclaim();
        assert!(!arena.spare.is_empty(), "emptied chunks become spares");
        let more: Vec<KeyPlace> = (100_000..150_000)
            .map(|i| arena.push(&key(i)).unwrap())
            .collect();
        assert!(arena.memory_size() <= allocated + CHUNK_BYTES);
        for (i, place) in places[50_000..].iter().chain(&more).enumerate() {
            assert_eq!(arena.get(*place), key(50_000 + i).as_slice());
        }
        assert_eq!(arena.live_bytes(), 100_000 * key(0).len());
    }

    #[test]
    fn keys_forgotten_out_of_order_are_evacuated_from_mostly_empty_chunks() {
        let mut arena = KeyArena::default();
        let mut places: Vec<(usize, KeyPlace)> = (0..200_000)
            .map(|i| (i, arena.push(&key(i)).unwrap()))
            .collect();
        // Nine keys in ten are forgotten, spread over every chunk.
        places.retain(|(i, place)| {
            let kept = i % 10 == 0;
            if !kept {
                arena.forget(*place);
            }
            kept
        });
        arena.reclaim();
        assert!(arena.wants_evacuation());
        let before = arena.memory_size();
        arena.evacuate(places.iter_mut().map(|(_, place)| place));
        assert!(arena.memory_size() < before / 3, "the arena shrank");
        assert!(!arena.wants_evacuation());
        for (i, place) in &places {
            assert_eq!(arena.get(*place), key(*i).as_slice());
        }
    }
}
