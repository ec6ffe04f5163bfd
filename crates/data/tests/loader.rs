//! Sampler and loader: permutations, shards, flips, batching, determinism under thread
//! timing, and exact resume from a saved cursor.

use ditbench_data::{Batch, Builtin, Cursor, DataError, Dataset, Loader, LoaderConfig, Sampler, SamplerConfig};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn cfg(seed: u64, batch: usize, rank: usize, world: usize) -> SamplerConfig {
    SamplerConfig { rank, world_size: world, ..SamplerConfig::new(seed, batch) }
}

fn take(loader: &mut Loader, n: usize) -> Vec<Batch> {
    (0..n).map(|_| loader.next_batch().unwrap()).collect()
}

fn loader(ds: &Arc<dyn Dataset>, sampler: &Sampler, start: Cursor, workers: usize, prefetch: usize) -> Loader {
    Loader::new(Arc::clone(ds), sampler.clone(), start, LoaderConfig { workers, prefetch }).unwrap()
}

#[test]
fn permutation_is_a_permutation_that_depends_on_seed_and_epoch() {
    let s = Sampler::new(1000, cfg(1, 10, 0, 1)).unwrap();
    let p0 = s.permutation(0);
    let mut sorted = p0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
    assert_eq!(s.permutation(0), p0, "same (seed, epoch)");
    assert_ne!(s.permutation(1), p0, "another epoch");
    let other = Sampler::new(1000, cfg(2, 10, 0, 1)).unwrap();
    assert_ne!(other.permutation(0), p0, "another seed");
    // Not the identity, and roughly uniform: the first position's value over many epochs
    // falls in each tenth of the range about equally often.
    assert_ne!(p0, (0..1000).collect::<Vec<u32>>());
    let mut tenths = [0u32; 10];
    for e in 0..2000 {
        tenths[(s.permutation(e)[0] / 100) as usize] += 1;
    }
    for t in tenths {
        assert!((140..260).contains(&t), "{tenths:?}");
    }
    // Without shuffling: index order.
    let plain = Sampler::new(50, SamplerConfig { shuffle: false, ..cfg(1, 10, 0, 1) }).unwrap();
    assert_eq!(plain.permutation(3), (0..50).collect::<Vec<u32>>());
}

#[test]
fn shards_are_disjoint_cover_the_epoch_and_take_every_wth_position() {
    for (n, world) in [(100usize, 1usize), (100, 3), (101, 4), (7, 7), (1000, 8), (37, 5)] {
        let perm = Sampler::new(n, cfg(9, 1, 0, world)).unwrap().permutation(4);
        let mut seen = HashSet::new();
        for rank in 0..world {
            let s = Sampler::new(n, cfg(9, 1, rank, world)).unwrap();
            let shard = s.shard(4);
            // Closed form: positions rank, rank + w, ...
            let want: Vec<u32> = (rank..n).step_by(world).map(|p| perm[p]).collect();
            assert_eq!(shard, want, "n {n} world {world} rank {rank}");
            for i in shard {
                assert!(seen.insert(i), "index {i} in two shards (n {n}, world {world})");
            }
        }
        assert_eq!(seen.len(), n, "shards do not cover the epoch (n {n}, world {world})");
    }
}

#[test]
fn ranks_make_disjoint_batches_and_the_same_number_of_them() {
    let (n, world, b) = (103usize, 3usize, 4usize);
    // floor(floor(103 / 3) / 4) = floor(34 / 4) = 8 batches per rank per epoch.
    let mut seen = HashSet::new();
    for rank in 0..world {
        let s = Sampler::new(n, cfg(5, b, rank, world)).unwrap();
        assert_eq!(s.batches_per_epoch(), 8);
        let mut c = Cursor::default();
        for _ in 0..8 {
            let plan = s.plan(c);
            assert_eq!(plan.cursor.epoch, 0);
            for i in plan.indices {
                assert!(seen.insert(i), "index {i} twice");
            }
            c = plan.next;
        }
        assert_eq!(c, Cursor::new(1, 0), "rank {rank} moves to the next epoch after 8 batches");
    }
    assert_eq!(seen.len(), 8 * 4 * 3);
}

#[test]
fn an_epoch_of_batches_visits_each_sample_once_and_classes_are_balanced() {
    let ds: Arc<dyn Dataset> = Arc::new(Builtin::new(8, 1000, 4).unwrap());
    let s = Sampler::new(1000, cfg(3, 25, 0, 1)).unwrap();
    assert_eq!(s.batches_per_epoch(), 40);
    let mut l = loader(&ds, &s, Cursor::default(), 2, 4);
    let batches = take(&mut l, 40);
    let mut indices: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    indices.sort();
    assert_eq!(indices, (0..1000).collect::<Vec<_>>());
    let mut counts = [0usize; 10];
    for b in &batches {
        assert_eq!(b.shape, [25, 3, 8, 8]);
        assert_eq!(b.pixels.len(), 25 * 3 * 8 * 8);
        for &l in &b.labels {
            counts[l as usize] += 1;
        }
        assert_eq!(b.cursor.epoch, 0);
    }
    assert_eq!(counts, [100; 10]);
    assert_eq!(l.cursor(), Cursor::new(1, 0));
    // The batches hold what the dataset gives for those indices and flips.
    for b in batches.iter().take(3) {
        for (j, (&i, &f)) in b.indices.iter().zip(&b.flips).enumerate() {
            let (x, y) = ds.get(i, f).unwrap();
            assert_eq!(&b.pixels[j * 192..(j + 1) * 192], x.as_slice());
            assert_eq!(b.labels[j], y);
        }
    }
}

#[test]
fn flips_are_fair_and_do_not_depend_on_the_world_size() {
    let n = 12_000;
    let one = Sampler::new(n, cfg(8, 1, 0, 1)).unwrap();
    let perm = one.permutation(2);
    let flips: Vec<bool> = (0..n as u64).map(|p| one.flip(2, p)).collect();
    let heads = flips.iter().filter(|&&f| f).count();
    // Binomial(12000, 1/2): sd ~ 55; 6 sd either side.
    assert!((5_670..6_330).contains(&heads), "{heads} flips of {n}");
    // Rank r of 4 makes the same decision for the same sample.
    for rank in 0..4 {
        let s = Sampler::new(n, cfg(8, 100, rank, 4)).unwrap();
        let plan = s.plan(Cursor::new(2, 300));
        for (j, (&i, &f)) in plan.indices.iter().zip(&plan.flips).enumerate() {
            let global = rank + (300 + j) * 4;
            assert_eq!(perm[global] as usize, i);
            assert_eq!(flips[global], f);
        }
    }
    let off = Sampler::new(n, SamplerConfig { random_flip: false, ..cfg(8, 1, 0, 1) }).unwrap();
    assert!((0..1000).all(|p| !off.flip(2, p)));
}

/// Wraps a dataset and sleeps a pseudo-random time in each `get`, so that workers finish
/// out of order.
struct Jittery<D> {
    inner: D,
    calls: AtomicU64,
}

impl<D: Dataset> Dataset for Jittery<D> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn image_size(&self) -> usize {
        self.inner.image_size()
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
    fn get_into(&self, index: usize, flip: bool, out: &mut [f32]) -> Result<i64, DataError> {
        let k = self.calls.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
        std::thread::sleep(Duration::from_micros((k.wrapping_mul(2654435761) ^ t) % 700));
        self.inner.get_into(index, flip, out)
    }
}

#[test]
fn output_does_not_depend_on_workers_prefetch_or_timing() {
    let n = 90;
    let s = Sampler::new(n, cfg(12, 8, 0, 1)).unwrap(); // 11 batches per epoch
    let plain: Arc<dyn Dataset> = Arc::new(Builtin::new(8, n, 1).unwrap());
    let reference = take(&mut loader(&plain, &s, Cursor::default(), 0, 0), 30);
    // The inline loader against the sampler's plans directly.
    let mut c = Cursor::default();
    for b in &reference {
        let plan = s.plan(c);
        assert_eq!((b.indices.clone(), b.flips.clone(), b.cursor, b.next), (plan.indices, plan.flips, plan.cursor, plan.next));
        c = plan.next;
    }
    let jittery: Arc<dyn Dataset> = Arc::new(Jittery { inner: Builtin::new(8, n, 1).unwrap(), calls: AtomicU64::new(0) });
    for (workers, prefetch) in [(1, 1), (2, 2), (3, 7), (4, 16)] {
        let got = take(&mut loader(&jittery, &s, Cursor::default(), workers, prefetch), 30);
        assert!(got == reference, "workers {workers} prefetch {prefetch}: batches differ");
    }
}

#[test]
fn resuming_from_a_saved_cursor_equals_an_uninterrupted_run() {
    let n = 230;
    let ds: Arc<dyn Dataset> = Arc::new(Builtin::new(8, n, 6).unwrap());
    for (rank, world) in [(0usize, 1usize), (1, 3)] {
        let s = Sampler::new(n, cfg(21, 16, rank, world)).unwrap();
        let bpe = s.batches_per_epoch() as usize; // 14 (one rank) or 4 (rank 1 of 3)
        let total = 3 * bpe + 2;
        let uninterrupted = take(&mut loader(&ds, &s, Cursor::default(), 2, 4), total);
        // Stops anywhere: at the start, mid-epoch, on an epoch boundary, near the end.
        for stop in [0, 1, 5, bpe - 1, bpe, bpe + 3, total - 1] {
            let mut first = loader(&ds, &s, Cursor::default(), 2, 6);
            let mut got = take(&mut first, stop);
            // The checkpoint stores the cursor (through JSON, as a run would) while the
            // loader has already prefetched further; then the process "dies".
            let saved = serde_json::to_string(&first.cursor()).unwrap();
            if let Some(last) = got.last() {
                assert_eq!(first.cursor(), last.next);
            }
            drop(first);
            let cursor: Cursor = serde_json::from_str(&saved).unwrap();
            // Resume with another worker count: the sequence must not depend on it.
            let mut second = loader(&ds, &s, cursor, 3, 2);
            got.extend(take(&mut second, total - stop));
            assert!(got == uninterrupted, "rank {rank}/{world}: resume after {stop} batches differs");
        }
    }
}

#[test]
fn advance_matches_stepping_batch_by_batch() {
    let s = Sampler::new(230, cfg(2, 16, 0, 1)).unwrap(); // 14 batches, 224 samples per epoch
    let starts = [Cursor::new(0, 0), Cursor::new(0, 16 * 5), Cursor::new(3, 16 * 13), Cursor::new(1, 220)];
    for start in starts {
        let mut c = s.normalize(start);
        for k in 0..40 {
            assert_eq!(s.advance(start, k), c, "start {start} k {k}");
            c = s.plan(c).next;
        }
    }
    // A cursor whose next batch would not fit moves to the next epoch.
    assert_eq!(s.normalize(Cursor::new(1, 220)), Cursor::new(2, 0));
    assert_eq!(s.normalize(Cursor::new(1, 208)), Cursor::new(1, 208));
}

/// A dataset that fails on one index.
struct FailsAt(usize);

impl Dataset for FailsAt {
    fn len(&self) -> usize {
        64
    }
    fn image_size(&self) -> usize {
        2
    }
    fn class_names(&self) -> &[String] {
        &[]
    }
    fn get_into(&self, index: usize, _flip: bool, out: &mut [f32]) -> Result<i64, DataError> {
        if index == self.0 {
            return Err(DataError::BadImage { path: format!("img{index}.png").into(), reason: "broken".into() });
        }
        out.fill(index as f32);
        Ok(0)
    }
}

#[test]
fn a_failing_sample_stops_the_loader_with_its_error() {
    let s = Sampler::new(64, SamplerConfig { shuffle: false, ..cfg(0, 8, 0, 1) }).unwrap();
    for workers in [0, 1, 3] {
        let ds: Arc<dyn Dataset> = Arc::new(FailsAt(20)); // in the third batch (16..24)
        let mut l = loader(&ds, &s, Cursor::default(), workers, 4);
        assert!(l.next_batch().is_ok());
        assert!(l.next_batch().is_ok());
        let err = l.next_batch().unwrap_err().to_string();
        assert!(err.contains("img20.png"), "workers {workers}: {err}");
        assert!(l.next_batch().is_err());
        assert!(l.next().is_none(), "the iterator ends after an error");
        assert_eq!(l.cursor(), Cursor::new(0, 16));
    }
}

#[test]
fn bad_sampler_and_loader_configurations_are_errors() {
    assert!(Sampler::new(100, cfg(0, 0, 0, 1)).is_err(), "batch 0");
    assert!(Sampler::new(100, cfg(0, 10, 2, 2)).is_err(), "rank outside the world");
    assert!(Sampler::new(100, cfg(0, 10, 0, 0)).is_err(), "world 0");
    let err = Sampler::new(100, cfg(0, 30, 0, 4)).unwrap_err().to_string();
    assert!(err.contains("too small"), "{err}");
    let ds: Arc<dyn Dataset> = Arc::new(Builtin::new(8, 50, 0).unwrap());
    let s = Sampler::new(60, cfg(0, 10, 0, 1)).unwrap();
    assert!(Loader::new(ds, s, Cursor::default(), LoaderConfig::default()).is_err(), "length mismatch");
}

#[test]
fn dropping_a_loader_with_full_queues_returns_promptly() {
    let ds: Arc<dyn Dataset> = Arc::new(Builtin::new(8, 500, 0).unwrap());
    let s = Sampler::new(500, cfg(0, 10, 0, 1)).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..20 {
        let mut l = loader(&ds, &s, Cursor::default(), 3, 6);
        l.next_batch().unwrap();
        std::thread::sleep(Duration::from_millis(2)); // let the queues fill
        drop(l);
    }
    assert!(t.elapsed() < Duration::from_secs(10));
}
