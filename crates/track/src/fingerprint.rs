//! What makes two quality numbers comparable.
//!
//! An FID is a number about a protocol as much as about a model: 1,000 samples give a
//! larger (biased) FID than 50,000; another Inception port, other reference statistics,
//! guidance on all channels instead of the paper's first three, the raw weights instead
//! of the EMA, bf16 sampling: each moves the number, and no rule converts one into the
//! other (the usual cause of "FID 7 vs 1.3" between two evaluators). A [`Fingerprint`]
//! collects everything about an eval row except the model and the step: rows whose
//! fingerprints are equal may be compared, plotted on one curve and fitted together;
//! others may not.
//!
//! A field a row did not record (rows written before it existed) is `None`, shown as
//! "unrecorded", and differs from every recorded value: nobody can know they match.
//! Two unrecorded fields are equal, so older rows still compare with each other.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::EvalRow;

/// How a row shows a field it did not record.
pub const UNRECORDED: &str = "unrecorded";

/// The fields of a [`Fingerprint`], in its canonical order (the order of
/// [`Fingerprint::differences`] and of the text its id hashes).
pub const FINGERPRINT_FIELDS: [&str; 12] = [
    "metric",
    "extractor",
    "extractor_hash",
    "reference_hash",
    "num_samples",
    "sampler",
    "sampling_steps",
    "cfg_scale",
    "cfg_mode",
    "weights",
    "vae",
    "precision",
];

/// Everything that makes two eval rows' values comparable (see the module docs).
/// Serialised with its [`id`](Fingerprint::id) first; the id is recomputed, not read,
/// when deserialising.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Fingerprint {
    /// Metric, e.g. "fid" or "FD_builtin-…".
    pub metric: String,
    /// Feature extractor, e.g. "inception-v3".
    pub extractor: String,
    /// 16 hex digits: a hash of the feature network's weights.
    pub extractor_hash: Option<String>,
    /// 16 hex digits: a hash of the reference statistics (mu, sigma).
    pub reference_hash: Option<String>,
    /// Number of generated samples.
    pub num_samples: i64,
    /// Sampler, e.g. "ddpm".
    pub sampler: String,
    /// Sampling steps.
    pub sampling_steps: i64,
    /// Classifier-free guidance scale (1.0 = none).
    pub cfg_scale: f64,
    /// "paper" (guidance on the first 3 channels) or "all".
    pub cfg_mode: Option<String>,
    /// "ema" or "raw".
    pub weights: Option<String>,
    /// "none" in pixel space; else the VAE's name and a weight hash.
    pub vae: Option<String>,
    /// "fp32" or "bf16" (sampling autocast).
    pub precision: Option<String>,
}

/// One field in which two fingerprints differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDiff {
    /// The field's name (one of [`FINGERPRINT_FIELDS`]).
    pub field: &'static str,
    /// Its value on the left ("unrecorded" when not recorded).
    pub left: String,
    /// Its value on the right.
    pub right: String,
}

impl fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} vs {}", self.field, self.left, self.right)
    }
}

impl FieldDiff {
    /// "num_samples 1000 vs 5000, reference_hash 1a2b… vs 9f8e…": the differences as
    /// one phrase for an error or a note.
    pub fn join(diffs: &[FieldDiff]) -> String {
        diffs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// A float as text: Rust's shortest round-trip form (stable across versions), with
/// -0 written as 0 so that the two zeros are one value.
fn float_text(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v}")
    }
}

impl Fingerprint {
    /// The fields as text, in [`FINGERPRINT_FIELDS`] order; `None` where unrecorded.
    pub fn values(&self) -> [(&'static str, Option<String>); 12] {
        let s = |v: &str| Some(v.to_string());
        let o = |v: &Option<String>| v.clone();
        [
            ("metric", s(&self.metric)),
            ("extractor", s(&self.extractor)),
            ("extractor_hash", o(&self.extractor_hash)),
            ("reference_hash", o(&self.reference_hash)),
            ("num_samples", Some(self.num_samples.to_string())),
            ("sampler", s(&self.sampler)),
            ("sampling_steps", Some(self.sampling_steps.to_string())),
            ("cfg_scale", Some(float_text(self.cfg_scale))),
            ("cfg_mode", o(&self.cfg_mode)),
            ("weights", o(&self.weights)),
            ("vae", o(&self.vae)),
            ("precision", o(&self.precision)),
        ]
    }

    /// The text the id hashes: one `field=value` line per field in canonical order,
    /// the value as a JSON string, or `null` when unrecorded (so that no recorded text,
    /// "null" included, reads like an unrecorded field).
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for (name, v) in self.values() {
            out.push_str(name);
            out.push('=');
            match v {
                Some(v) => out.push_str(&serde_json::to_string(&v).expect("a string serialises")),
                None => out.push_str("null"),
            }
            out.push('\n');
        }
        out
    }

    /// 8 hex digits naming this fingerprint: FNV-1a (64 bit, stable across Rust
    /// versions) of [`canonical`](Self::canonical), its two halves xored. Equal
    /// fingerprints have equal ids; a different value in any field changes it (up to
    /// a 2^-32 chance of a collision).
    pub fn id(&self) -> String {
        let h = ditbench_common::fnv1a64(self.canonical().as_bytes());
        format!("{:08x}", (h ^ (h >> 32)) as u32)
    }

    /// The fields whose values differ, in canonical order (empty: comparable). An
    /// unrecorded field differs from any recorded value and equals another unrecorded one.
    pub fn differences(&self, other: &Fingerprint) -> Vec<FieldDiff> {
        self.values()
            .into_iter()
            .zip(other.values())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((field, a), (_, b))| FieldDiff {
                field,
                left: a.unwrap_or_else(|| UNRECORDED.into()),
                right: b.unwrap_or_else(|| UNRECORDED.into()),
            })
            .collect()
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The serialised form: the id, then the fields.
        #[derive(Serialize)]
        struct Wire<'a> {
            id: String,
            metric: &'a str,
            extractor: &'a str,
            extractor_hash: &'a Option<String>,
            reference_hash: &'a Option<String>,
            num_samples: i64,
            sampler: &'a str,
            sampling_steps: i64,
            cfg_scale: f64,
            cfg_mode: &'a Option<String>,
            weights: &'a Option<String>,
            vae: &'a Option<String>,
            precision: &'a Option<String>,
        }
        Wire {
            id: self.id(),
            metric: &self.metric,
            extractor: &self.extractor,
            extractor_hash: &self.extractor_hash,
            reference_hash: &self.reference_hash,
            num_samples: self.num_samples,
            sampler: &self.sampler,
            sampling_steps: self.sampling_steps,
            cfg_scale: self.cfg_scale,
            cfg_mode: &self.cfg_mode,
            weights: &self.weights,
            vae: &self.vae,
            precision: &self.precision,
        }
        .serialize(serializer)
    }
}

impl EvalRow {
    /// What makes this row's value comparable with another's (see [`Fingerprint`]).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            metric: self.metric.clone(),
            extractor: self.extractor.clone(),
            extractor_hash: self.extractor_hash.clone(),
            reference_hash: self.reference_hash.clone(),
            num_samples: self.num_samples,
            sampler: self.sampler.clone(),
            sampling_steps: self.sampling_steps,
            cfg_scale: self.cfg_scale,
            cfg_mode: self.cfg_mode.clone(),
            weights: self.weights.clone(),
            vae: self.vae.clone(),
            precision: self.precision.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprint {
        Fingerprint {
            metric: "fid".into(),
            extractor: "inception-v3".into(),
            extractor_hash: Some("00112233445566ff".into()),
            reference_hash: None,
            num_samples: 1000,
            sampler: "ddpm".into(),
            sampling_steps: 250,
            cfg_scale: 1.0,
            cfg_mode: Some("paper".into()),
            weights: Some("ema".into()),
            vae: Some("none".into()),
            precision: Some("fp32".into()),
        }
    }

    #[test]
    fn canonical_text_and_id_are_pinned() {
        // Pinned: the id is stored in reports and predictions, so it must not drift.
        let f = fp();
        assert_eq!(
            f.canonical(),
            "metric=\"fid\"\nextractor=\"inception-v3\"\nextractor_hash=\"00112233445566ff\"\n\
             reference_hash=null\nnum_samples=\"1000\"\nsampler=\"ddpm\"\nsampling_steps=\"250\"\n\
             cfg_scale=\"1\"\ncfg_mode=\"paper\"\nweights=\"ema\"\nvae=\"none\"\nprecision=\"fp32\"\n"
        );
        // Computed independently in Python (FNV-1a 64 over the text above, halves xored).
        assert_eq!(f.id(), "050d1335");
    }

    #[test]
    fn unrecorded_is_not_the_text_null_and_zeros_are_one() {
        let mut a = fp();
        let mut b = fp();
        b.reference_hash = Some("null".into());
        assert_ne!(a.id(), b.id());
        a.cfg_scale = -0.0;
        b = a.clone();
        b.cfg_scale = 0.0;
        assert_eq!(a.id(), b.id());
        assert!(a.differences(&b).is_empty());
    }
}
