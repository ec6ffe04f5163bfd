//! # ditbench-track: the run store
//!
//! A run store is a directory (default `experiments/`, see [`resolve_store`]). A run
//! folder is the record of its run, written by one process at a time without locks or
//! SQLite, so a store works on a cluster's shared filesystem:
//!
//! ```text
//! <store>/<sweep>/sweep.toml          frozen spec as launched (runs.json: its run list)
//! <store>/<sweep>/predictions/*.json  scaling-law predictions, checked when their runs end
//! <store>/<sweep>/<run-id>/
//!     run.json                        what the run is; created once    (folder.rs)
//!     events.jsonl                    append-only status changes        (folder.rs)
//!     params.json, summaries.json     rewritten by rename               (folder.rs)
//!     lease                           the one writer and its heartbeat  (lease.rs)
//!     config.toml                     resolved config            (Store::write_config)
//!     metrics/NNNNNN.arrows           metric points while writing (Arrow IPC stream)
//!     evals/NNNNNN.arrows             eval rows while writing     (Arrow IPC stream)
//!     metrics.parquet, evals.parquet  after compaction; rows carry their attempt
//! <store>/index.sqlite                the derived index (index.rs); in the host's cache
//!                                     when the store is networked or read-only
//! ```
//!
//! ## Writing a run
//!
//! ```no_run
//! use ditbench_track::{Store, RunSpec, Status, StatusChange, EvalRow};
//! # fn main() -> ditbench_track::Result<()> {
//! let store = Store::open("experiments")?;                       // creates + migrates
//! store.register_sweep("demo", Some("[sweep]\nname = 'demo'\n"))?;
//! store.register_run(&RunSpec {
//!     id: "DiT-S-2-s0".into(), sweep: "demo".into(),
//!     model: Some("DiT-S".into()), patch: Some(2), ..Default::default()
//! })?;
//! store.set_params("DiT-S-2-s0", &[("lr", 1e-4.into()), ("batch", 256.into())])?;
//! store.set_status("DiT-S-2-s0", &StatusChange::new(Status::Running).on("node1", "cuda:0"))?;
//!
//! let mut w = store.metric_writer("DiT-S-2-s0")?;  // takes the run's lease, recovers a crash
//! for step in 0..1000 {
//!     w.log(step, "loss", 0.1)?;                   // buffered
//!     if step % 100 == 99 { w.flush()?; }          // survives a kill -9 from here on
//! }
//! w.log_eval(&EvalRow { step: 1000, wall_time: 0.0, metric: "fid".into(), value: 68.4,
//!     num_samples: 50_000, cfg_scale: 1.0, sampler: "ddpm".into(), sampling_steps: 250,
//!     extractor: "inception-v3".into(), extractor_hash: None, reference_hash: None,
//!     cfg_mode: Some("paper".into()), weights: Some("ema".into()), vae: Some("none".into()),
//!     precision: Some("fp32".into()) })?;
//! w.close()?;                                      // compacts, writes summaries, frees the lease
//! store.set_status("DiT-S-2-s0", &StatusChange::new(Status::Finished))?;
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//!
//! * **Flushed means safe from the process dying.** [`MetricWriter::flush`] appends one
//!   Arrow IPC record batch per table; a kill -9, OOM kill or panic after it returns
//!   loses none of those rows. A kill during a flush leaves a truncated trailing
//!   message, which readers ignore (they keep every complete batch before it): never a
//!   partial row.
//! * **Synced means safe from the machine dying.** [`MetricWriter::sync`] (the trainer
//!   calls it with every checkpoint) and [`MetricWriter::close`] fsync; with
//!   [`Durability::Machine`] every flush does. The default, [`Durability::Process`], is
//!   what makes logging cheap: a power loss can only
//!   drop rows newer than the last checkpoint, which a resume recomputes anyway.
//! * **Compaction is atomic and idempotent.** Parquet files are written to a temporary
//!   file, fsynced and renamed; each records the highest segment number it contains, so
//!   a crash at any point neither loses nor duplicates rows. A writer opened on a run
//!   whose previous writer died compacts what it left first ([`Store::recover_all`]
//!   does it for every such run).
//! * **Damaged segments are kept, not deleted**: their readable prefix goes into Parquet
//!   and the file is renamed `NNNNNN.arrows.corrupt`.
//! * **One history per run**: rows carry the attempt that wrote them; an attempt that
//!   resumed from step S supersedes earlier attempts' rows past S ([`live_through`],
//!   [`RunData::live`]); summaries are of the live history.
//! * **Every quality number says how it was made**: an [`EvalRow`]'s [`Fingerprint`]
//!   (extractor and a hash of its weights, a hash of the reference statistics, samples,
//!   sampler and steps, guidance scale and mode, EMA or raw weights, VAE, precision)
//!   decides which values may be compared. Eval tables written before those columns
//!   existed read back with them null ("unrecorded"), which matches no recorded value.
//! * **The index is derived**: [`Index::refresh`] re-reads only run folders that
//!   changed, [`Index::rebuild`] reads them all; a damaged index is rebuilt, a damaged
//!   run folder is left out with a warning naming the file.
//! * **Identifiers** that become paths (run ids, sweep names) are validated
//!   ([`validate_id`]): no `/`, `\`, `..`, leading `.`, control characters or empties.
//!
//! Reading: [`read_run`] merges a run's Parquet files and pending segments without
//! changing anything (safe while the run is written); `ditbench-query` builds its SQL
//! tables from this crate's index and files.
//!
//! This crate links neither libtorch nor polars.

mod error;
mod fingerprint;
pub mod folder;
mod fsutil;
mod ids;
pub mod index;
pub mod lease;
mod legacy;
pub mod predictions;
pub mod segments;
mod store;
mod types;
mod writer;

pub use error::{Error, Result};
pub use fingerprint::{FieldDiff, Fingerprint, FINGERPRINT_FIELDS, UNRECORDED};
pub use folder::{is_live, live_through};
pub use ids::{validate_id, validate_metric_name, MAX_ID_LEN};
pub use index::{index_location, Index, IndexLocation, RefreshReport, INDEX_FILE};
pub use lease::{Lease, LeaseInfo, LeaseWatch, LEASE_FILE};
pub use segments::{read_run, EvalColumns, MetricColumns, RunData, Table};
pub use legacy::LEGACY_REGISTRY_FILE;
pub use predictions::{Check, PredictionRecord, Score, Target, PREDICTIONS_DIR};
pub use store::{resolve_store, Store};
pub use types::{
    now, EvalRow, Event, MetricPoint, ParamRow, ParamValue, RunRecord, RunSpec, Source, Status,
    StatusChange, Summary, SweepRecord,
};
pub use writer::{CloseReport, Durability, MetricWriter, SEGMENT_ROTATE_BYTES};
