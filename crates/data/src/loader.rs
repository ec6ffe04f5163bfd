//! The loader: builds batches ahead of the consumer on background threads.
//!
//! Batch `k` (counted from the start cursor) is built by worker `k % workers` and sent
//! on that worker's bounded channel; the consumer receives batch `k` from exactly that
//! channel, so the output order is the sampler's order whatever the thread timing, and
//! each worker is at most `ceil(prefetch / workers)` batches ahead. With `workers = 0`
//! batches are built on the calling thread.

use crate::sampler::{BatchPlan, Cursor, Sampler};
use crate::{BadImage, DataError, Dataset};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A batch: pixels `NCHW` in `[-1, 1]`, labels, and where it sits in the sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `shape[0] * shape[1] * shape[2] * shape[3]` values, `NCHW`.
    pub pixels: Vec<f32>,
    /// `[batch, channels, height, width]`.
    pub shape: [usize; 4],
    pub labels: Vec<i64>,
    /// Dataset indices of the samples (as planned by the sampler).
    pub indices: Vec<usize>,
    /// Whether each sample was mirrored.
    pub flips: Vec<bool>,
    /// Cursor at which this batch starts.
    pub cursor: Cursor,
    /// Cursor after this batch: save it with a checkpoint taken after consuming it.
    pub next: Cursor,
    /// Unreadable images met while building this batch, each replaced by the next
    /// readable sample (a pure function of the plan, as the pixels are).
    pub bad_images: Vec<BadImage>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Background threads building batches (0: build on the calling thread).
    pub workers: usize,
    /// Batches built ahead of the consumer, in all (at least one per worker).
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig { workers: 2, prefetch: 4 }
    }
}

/// Builds the batch of `plan` from `dataset`.
fn build(dataset: &dyn Dataset, plan: BatchPlan) -> Result<Batch, DataError> {
    let (c, s) = (dataset.channels(), dataset.image_size());
    let per = dataset.sample_len();
    let n = plan.indices.len();
    let mut pixels = vec![0f32; n * per];
    let mut labels = Vec::with_capacity(n);
    let mut bad_images = Vec::new();
    for (i, (&index, &flip)) in plan.indices.iter().zip(&plan.flips).enumerate() {
        labels.push(dataset.get_into_noting_bad(index, flip, &mut pixels[i * per..(i + 1) * per], &mut bad_images)?);
    }
    Ok(Batch {
        pixels,
        shape: [n, c, s, s],
        labels,
        indices: plan.indices,
        flips: plan.flips,
        cursor: plan.cursor,
        next: plan.next,
        bad_images,
    })
}

/// Plans batches for one thread, keeping the permutation of the current epoch.
struct Planner {
    sampler: Sampler,
    epoch: Option<u64>,
    permutation: Vec<u32>,
}

impl Planner {
    fn new(sampler: Sampler) -> Self {
        Planner { sampler, epoch: None, permutation: Vec::new() }
    }

    fn plan(&mut self, cursor: Cursor) -> BatchPlan {
        let c = self.sampler.normalize(cursor);
        if self.epoch != Some(c.epoch) {
            self.permutation = self.sampler.permutation(c.epoch);
            self.epoch = Some(c.epoch);
        }
        self.sampler.plan_with(c, &self.permutation)
    }
}

type Msg = Result<Batch, DataError>;

/// An endless, deterministic sequence of batches starting at a cursor.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    sampler: Sampler,
    start: Cursor,
    /// Batches returned so far.
    taken: u64,
    /// After the last returned batch.
    cursor: Cursor,
    receivers: Vec<Receiver<Msg>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    inline: Option<Planner>,
    failed: Option<String>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("start", &self.start)
            .field("cursor", &self.cursor)
            .field("workers", &self.handles.len())
            .finish()
    }
}

impl Loader {
    /// Starts producing batches of `dataset` as `sampler` orders them, from `start`
    /// (`Cursor::default()` for a fresh run, or the cursor saved with a checkpoint).
    pub fn new(
        dataset: Arc<dyn Dataset>,
        sampler: Sampler,
        start: Cursor,
        cfg: LoaderConfig,
    ) -> Result<Self, DataError> {
        if sampler.len() != dataset.len() {
            return Err(DataError::Config(format!(
                "sampler is for {} samples but the dataset has {}",
                sampler.len(),
                dataset.len()
            )));
        }
        let start = sampler.normalize(start);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        let workers = cfg.workers;
        if workers > 0 {
            let cap = cfg.prefetch.div_ceil(workers).max(1);
            for w in 0..workers {
                let (tx, rx) = sync_channel::<Msg>(cap);
                let dataset = Arc::clone(&dataset);
                let stop = Arc::clone(&stop);
                let mut planner = Planner::new(sampler.clone());
                let handle = std::thread::Builder::new()
                    .name(format!("ditbench-data-{w}"))
                    .spawn(move || {
                        let mut k = w as u64;
                        while !stop.load(Ordering::Relaxed) {
                            let cursor = planner.sampler.advance(start, k);
                            let plan = planner.plan(cursor);
                            let msg = build(dataset.as_ref(), plan);
                            let failed = msg.is_err();
                            if tx.send(msg).is_err() || failed {
                                break;
                            }
                            k += workers as u64;
                        }
                    })
                    .map_err(|e| DataError::LoaderStopped(format!("cannot start a worker thread: {e}")))?;
                receivers.push(rx);
                handles.push(handle);
            }
        }
        let inline = (workers == 0).then(|| Planner::new(sampler.clone()));
        Ok(Loader {
            dataset,
            sampler,
            start,
            taken: 0,
            cursor: start,
            receivers,
            handles,
            stop,
            inline,
            failed: None,
        })
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// Cursor after the last batch returned (the start cursor before the first): what a
    /// checkpoint taken now should save.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The next batch. After an error every later call returns an error too.
    pub fn next_batch(&mut self) -> Result<Batch, DataError> {
        if let Some(why) = &self.failed {
            return Err(DataError::LoaderStopped(why.clone()));
        }
        let k = self.taken;
        let msg = if let Some(planner) = self.inline.as_mut() {
            let plan = planner.plan(self.sampler.advance(self.start, k));
            build(self.dataset.as_ref(), plan)
        } else {
            let w = (k % self.receivers.len() as u64) as usize;
            self.receivers[w]
                .recv()
                .unwrap_or_else(|_| Err(DataError::LoaderStopped(format!("worker {w} ended unexpectedly (panicked?)"))))
        };
        match msg {
            Ok(batch) => {
                self.taken += 1;
                self.cursor = batch.next;
                Ok(batch)
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                self.shutdown();
                Err(e)
            }
        }
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers unblocks workers waiting to send.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, DataError>;

    /// Endless; ends (`None`) only after an error has been returned.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed.is_some() {
            return None;
        }
        Some(self.next_batch())
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shutdown();
    }
}
