//! Deterministic epoch sampling: what goes into each batch, as a pure function of
//! `(seed, epoch, position)`.
//!
//! * Epoch `e` visits the dataset in the order of a permutation drawn from `(seed, e)`
//!   (Fisher–Yates on a counter-based generator), or in index order without shuffling.
//! * Rank `r` of `world_size` ranks takes positions `r, r + w, r + 2w, …` of that
//!   permutation: shards are disjoint and together cover the epoch.
//! * Every rank makes the same number of batches per epoch,
//!   `floor(floor(len / w) / batch_size)`, so ranks stay in step; the few samples past
//!   that are left out of the epoch (a different few each epoch).
//! * Whether a sample is mirrored is decided by `(seed, epoch, global position in the
//!   permutation)`, so it does not depend on the world size or on thread timing.
//! * A [`Cursor`] `{epoch, position}` (position = samples of this rank's shard already
//!   consumed in the epoch) says where the next batch starts; saving the cursor after
//!   the last consumed batch and starting again from it continues the exact sequence.

use crate::rng::{domain, hash, Rng};
use crate::DataError;
use serde::{Deserialize, Serialize};

/// Where the next batch starts: `position` samples of this rank's shard of epoch `epoch`
/// have been consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub position: u64,
}

impl Cursor {
    pub fn new(epoch: u64, position: u64) -> Self {
        Cursor { epoch, position }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} position {}", self.epoch, self.position)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamplerConfig {
    pub seed: u64,
    pub batch_size: usize,
    /// Shuffle each epoch (else index order).
    pub shuffle: bool,
    /// Mirror each sample left-right with probability 1/2.
    pub random_flip: bool,
    pub rank: usize,
    pub world_size: usize,
}

impl SamplerConfig {
    /// Shuffled, random flips, one rank.
    pub fn new(seed: u64, batch_size: usize) -> Self {
        SamplerConfig { seed, batch_size, shuffle: true, random_flip: true, rank: 0, world_size: 1 }
    }
}

/// One batch's worth of decisions: which samples, whether each is mirrored, and the
/// cursor after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    /// Cursor at which this batch starts (normalised: a full batch fits after it).
    pub cursor: Cursor,
    /// Cursor after this batch: save it once the batch has been consumed.
    pub next: Cursor,
    pub indices: Vec<usize>,
    pub flips: Vec<bool>,
}

#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    len: usize,
    batches_per_epoch: u64,
}

impl Sampler {
    /// A sampler over `len` samples.
    pub fn new(len: usize, cfg: SamplerConfig) -> Result<Self, DataError> {
        if cfg.batch_size == 0 {
            return Err(DataError::Config("batch size must be positive".into()));
        }
        if cfg.world_size == 0 || cfg.rank >= cfg.world_size {
            return Err(DataError::Config(format!(
                "rank {} is not in a world of size {}",
                cfg.rank, cfg.world_size
            )));
        }
        if len > u32::MAX as usize {
            return Err(DataError::Config(format!("dataset of {len} samples is too large (max 2^32 - 1)")));
        }
        let per_rank = len / cfg.world_size;
        let batches_per_epoch = (per_rank / cfg.batch_size) as u64;
        if batches_per_epoch == 0 {
            return Err(DataError::Config(format!(
                "dataset of {len} samples is too small for batch size {} on {} rank(s)",
                cfg.batch_size, cfg.world_size
            )));
        }
        Ok(Sampler { cfg, len, batches_per_epoch })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn batch_size(&self) -> usize {
        self.cfg.batch_size
    }

    /// Batches each rank makes per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }

    /// Samples of its shard each rank consumes per epoch.
    pub fn samples_per_epoch(&self) -> u64 {
        self.batches_per_epoch * self.cfg.batch_size as u64
    }

    /// The order of epoch `epoch` over all ranks (a permutation of `0..len`).
    pub fn permutation(&self, epoch: u64) -> Vec<u32> {
        let n = self.len;
        let mut p: Vec<u32> = (0..n as u32).collect();
        if self.cfg.shuffle {
            let mut rng = Rng::from_key(&[domain::PERMUTATION, self.cfg.seed, epoch]);
            for i in (1..n).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                p.swap(i, j);
            }
        }
        p
    }

    /// This rank's shard of epoch `epoch`: `permutation(epoch)[rank::world_size]`.
    pub fn shard(&self, epoch: u64) -> Vec<u32> {
        shard_of(&self.permutation(epoch), self.cfg.rank, self.cfg.world_size)
    }

    /// Whether the sample at global position `position` of epoch `epoch` is mirrored.
    pub fn flip(&self, epoch: u64, position: u64) -> bool {
        self.cfg.random_flip && hash(&[domain::FLIP, self.cfg.seed, epoch, position]) >> 63 == 1
    }

    /// The same place, written so that a full batch fits after the position (a cursor at
    /// or past the end of an epoch's batches moves to the start of the next epoch).
    pub fn normalize(&self, c: Cursor) -> Cursor {
        let per_epoch = self.samples_per_epoch();
        if c.position + self.cfg.batch_size as u64 > per_epoch {
            Cursor { epoch: c.epoch + 1, position: 0 }
        } else {
            c
        }
    }

    /// The cursor `k` batches after `start`.
    pub fn advance(&self, start: Cursor, k: u64) -> Cursor {
        let b = self.cfg.batch_size as u64;
        let c = self.normalize(start);
        // Batches left in the first epoch.
        let left = (self.samples_per_epoch() - c.position) / b;
        if k < left {
            Cursor { epoch: c.epoch, position: c.position + k * b }
        } else {
            let k = k - left;
            Cursor {
                epoch: c.epoch + 1 + k / self.batches_per_epoch,
                position: (k % self.batches_per_epoch) * b,
            }
        }
    }

    /// The batch at `cursor`, given the permutation of the cursor's (normalised) epoch
    /// (`permutation(epoch)`; passed in so callers can reuse it across batches).
    pub fn plan_with(&self, cursor: Cursor, permutation: &[u32]) -> BatchPlan {
        let c = self.normalize(cursor);
        assert_eq!(permutation.len(), self.len, "permutation of the wrong length");
        let (r, w, b) = (self.cfg.rank as u64, self.cfg.world_size as u64, self.cfg.batch_size as u64);
        let mut indices = Vec::with_capacity(b as usize);
        let mut flips = Vec::with_capacity(b as usize);
        for i in c.position..c.position + b {
            let global = r + i * w;
            indices.push(permutation[global as usize] as usize);
            flips.push(self.flip(c.epoch, global));
        }
        BatchPlan { cursor: c, next: self.advance(c, 1), indices, flips }
    }

    /// The batch at `cursor` (computes the epoch's permutation).
    pub fn plan(&self, cursor: Cursor) -> BatchPlan {
        let c = self.normalize(cursor);
        self.plan_with(c, &self.permutation(c.epoch))
    }
}

/// Positions `rank, rank + world, …` of `permutation`.
pub(crate) fn shard_of(permutation: &[u32], rank: usize, world: usize) -> Vec<u32> {
    permutation.iter().skip(rank).step_by(world).copied().collect()
}
