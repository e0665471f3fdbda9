//! One shard of a dedupe's state: the keys whose hash falls to it, each with what the dedupe
//! knows of it. The state (`state`) splits its keys over as many shards as the pipeline has
//! threads, so that an epoch's keys are offered on every core at once: a key always falls to
//! the same shard, and each shard takes its rows in arrival order, so the row kept for a key
//! is the same as with one shard.

use arrow::error::ArrowError;

use super::keys::KeyTable;
use super::state::Keep;

/// What the state knows of one key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    /// The event time (ms) of the key's kept row; `i64::MIN` when the row has none.
    pub time_ms: i64,
    /// The kept row while it waits to be emitted: (batch, row) in the state's batches.
    pub candidate: Candidate,
}

/// A waiting row's place, (batch, row) in the state's batches, or none: an
/// `Option<(u32, u32)>` in 8 bytes rather than 12, so that a key's slot in the key table is 32
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    /// `u32::MAX`: no row waits.
    batch: u32,
    row: u32,
}

impl Candidate {
    pub const NONE: Candidate = Candidate {
        batch: u32::MAX,
        row: 0,
    };

    pub fn at(batch: usize, row: usize) -> Self {
        Candidate {
            batch: batch as u32,
            row: row as u32,
        }
    }

    pub fn get(self) -> Option<(usize, usize)> {
        (self.batch != u32::MAX).then_some((self.batch as usize, self.row as usize))
    }

    pub fn is_some(self) -> bool {
        self.batch != u32::MAX
    }

    pub fn is_none(self) -> bool {
        !self.is_some()
    }
}

/// What one row did to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offered {
    /// The key's row now (a candidate or, for [`Keep::FirstArrived`], to be emitted at once
    /// by the caller).
    Kept,
    /// A duplicate of a kept row: dropped.
    Duplicate,
}

/// The keys of one shard and how many of them have a row waiting.
#[derive(Debug, Default)]
pub(super) struct Shard {
    pub keys: KeyTable<Seen>,
    /// Keys whose row waits to be emitted.
    pub waiting: usize,
}

impl Shard {
    /// Offers a row (its key's bytes and 32 bits of the key's hash, its place, its event time)
    /// to the shard, keeping the row `keep` says.
    pub fn offer(
        &mut self,
        keep: Keep,
        key: &[u8],
        hash: u32,
        at: Candidate,
        time_ms: i64,
    ) -> Result<Offered, ArrowError> {
        let (seen, inserted) = self.keys.get_or_insert_hashed(key, hash, || Seen {
            time_ms,
            // A first-arrived row is emitted by the caller at once: nothing waits.
            candidate: if keep == Keep::FirstArrived {
                Candidate::NONE
            } else {
                at
            },
        })?;
        if inserted {
            if seen.candidate.is_some() {
                self.waiting += 1;
            }
            return Ok(Offered::Kept);
        }
        Ok(match keep {
            Keep::FirstArrived => Offered::Duplicate,
            Keep::Earliest => match seen.candidate.get() {
                Some(_) if time_ms < seen.time_ms => {
                    *seen = Seen {
                        time_ms,
                        candidate: at,
                    };
                    Offered::Kept
                }
                _ => Offered::Duplicate,
            },
            Keep::Latest if time_ms > seen.time_ms => {
                if seen.candidate.is_none() {
                    self.waiting += 1;
                }
                *seen = Seen {
                    time_ms,
                    candidate: at,
                };
                Offered::Kept
            }
            Keep::Latest => Offered::Duplicate,
        })
    }
}

/// Below this many rows in an epoch the shards are worked through on the caller's thread:
/// starting a thread costs more than it saves.
const MIN_ROWS_FOR_THREADS: usize = 16_384;

/// `work(index, shard)` for every shard, each shard on its own thread when the work is at
/// least [`MIN_ROWS_FOR_THREADS`] rows in all (the first shard on the caller's thread);
/// results in shard order. A panic in a shard's work is raised again here.
pub(super) fn each_shard<T: Send>(
    shards: &mut [Shard],
    rows: usize,
    work: impl Fn(usize, &mut Shard) -> T + Sync,
) -> Vec<T> {
    if shards.len() < 2 || rows < MIN_ROWS_FOR_THREADS {
        return shards
            .iter_mut()
            .enumerate()
            .map(|(i, shard)| work(i, shard))
            .collect();
    }
    let work = &work;
    std::thread::scope(|scope| {
        let mut shards = shards.iter_mut().enumerate();
        let first = shards.next();
        let others: Vec<_> = shards
            .map(|(i, shard)| scope.spawn(move || work(i, shard)))
            .collect();
        let mut results = Vec::with_capacity(others.len() + 1);
        if let Some((i, shard)) = first {
            results.push(work(i, shard));
        }
        for other in others {
            results.push(
                other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_key_knows_fits_in_16_bytes() {
        // With the key table's 16 bytes of place, a key's slot is 32 bytes.
        assert_eq!(std::mem::size_of::<Seen>(), 16);
    }

    #[test]
    fn every_shard_does_its_own_work_on_threads_or_not() {
        for rows in [3, MIN_ROWS_FOR_THREADS] {
            let mut shards: Vec<Shard> = (0..3).map(|_| Shard::default()).collect();
            let got = each_shard(&mut shards, rows, |i, shard| {
                shard.waiting += i + 1;
                (i, std::thread::current().id())
            });
            assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
            let caller = std::thread::current().id();
            let threads: Vec<bool> = got.iter().map(|(_, t)| *t != caller).collect();
            if rows < MIN_ROWS_FOR_THREADS {
                assert_eq!(threads, [false, false, false]);
            } else {
                assert_eq!(threads, [false, true, true]);
            }
            let waiting: Vec<usize> = shards.iter().map(|s| s.waiting).collect();
            assert_eq!(waiting, [1, 2, 3]);
        }
    }
}
