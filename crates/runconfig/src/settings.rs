//! The settings of a run config that take one of a few values: parsed once, where the
//! config is read (or the flag is parsed), into types that the code downstream matches
//! on, instead of strings each user compares again. Each one reads and writes exactly
//! the spelling config files have always used, so `config.toml` text and run ids stay
//! as they were.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::launch_checks::check_respacing;

/// A setting with a fixed list of values: the spelling of each, and the error that
/// lists them.
macro_rules! choice {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in the order the docs list them.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The config spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            /// The config spelling only; the error lists the valid values (the caller
            /// names the key or flag).
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let valid: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown value `{s}`; valid: {}", valid.join(", "))
                })
            }
        }
    };
}

/// Where the training images come from (`data.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// The procedural dataset (no download).
    Builtin,
    /// A folder of class sub-folders of images (`data.path`).
    ImageFolder,
    /// A folder made by `ditbench latents extract` (`data.path`).
    Latents,
}

choice!(DataKind { Builtin => "builtin", ImageFolder => "imagefolder", Latents => "latents" });

/// The compute precision asked for (`train.precision`, `--precision`); the trainer
/// resolves `Auto` on its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionSetting {
    /// bf16 on CUDA, fp32 on the CPU.
    #[default]
    Auto,
    Fp32,
    /// bf16 autocast over fp32 weights.
    Bf16,
}

choice!(PrecisionSetting { Auto => "auto", Fp32 => "fp32", Bf16 => "bf16" });

/// The feature network of the evaluation (`eval.extractor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Extractor {
    /// A small classifier trained on the run's real images (reported as `FD_<extractor>`).
    #[default]
    Builtin,
    /// pytorch-fid's Inception-v3 (reported as `fid`).
    Inception,
}

choice!(Extractor { Builtin => "builtin", Inception => "inception" });

/// The reverse process of a sampling (`--sampler`; in configs, a respacing that starts
/// with "ddim" is DDIM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Ancestral sampling with the learned variance (the paper's 250 steps).
    Ddpm,
    /// DDIM with η = 0 (deterministic).
    Ddim,
}

choice!(SamplerKind { Ddpm => "ddpm", Ddim => "ddim" });

/// How samples are drawn (`train.grid_sampling`, `eval.sampling`): a respacing of DiT's
/// 1000 diffusion steps as the official `space_timesteps` reads it ("" all steps, "250",
/// "10,20,30", "ddim25"), checked when it is parsed, and the sampler it names.
///
/// It keeps the text as written, which is what `GaussianDiffusion::dit` respaces and
/// what config files (and so run ids) hold.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sampling {
    respacing: String,
    sampler: SamplerKind,
}

impl Sampling {
    /// `steps` steps of `sampler`: "250" for DDPM, "ddim250" for DDIM (`ditbench sample`).
    pub fn new(sampler: SamplerKind, steps: usize) -> Result<Self, String> {
        match sampler {
            SamplerKind::Ddpm => steps.to_string().parse(),
            SamplerKind::Ddim => format!("ddim{steps}").parse(),
        }
    }

    pub fn sampler(&self) -> SamplerKind {
        self.sampler
    }

    /// The respacing text, as written (`GaussianDiffusion::dit(s.respacing())`).
    pub fn respacing(&self) -> &str {
        &self.respacing
    }
}

impl FromStr for Sampling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        check_respacing(s).map_err(|why| {
            format!(
                "`{s}`: {why} (valid: \"\" for all 1000 steps, DDPM step counts such as \"250\" or \"10,20,30\", \
                 or \"ddimN\" for N DDIM steps)"
            )
        })?;
        // The official respacing reads the text trimmed; so does the sampler it names.
        let sampler = if s.trim().starts_with("ddim") { SamplerKind::Ddim } else { SamplerKind::Ddpm };
        Ok(Sampling { respacing: s.to_string(), sampler })
    }
}

impl TryFrom<String> for Sampling {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Sampling> for String {
    fn from(s: Sampling) -> String {
        s.respacing
    }
}

impl fmt::Display for Sampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.respacing)
    }
}

/// As the string it is written as (error messages that print a spec with `{:?}` read
/// as they did when it was one).
impl fmt::Debug for Sampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.respacing, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value reads from and writes to its config string, through `FromStr` and
    /// `Display` and through serde (as a TOML value).
    fn round_trip<T>(all: &[T], texts: &[&str])
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = String> + Serialize + serde::de::DeserializeOwned,
    {
        assert_eq!(all.len(), texts.len());
        for (v, text) in all.iter().zip(texts) {
            assert_eq!(v.to_string(), *text);
            assert_eq!(text.parse::<T>().unwrap(), *v);
            assert_eq!(toml::Value::try_from(v).unwrap(), toml::Value::String(text.to_string()));
            assert_eq!(toml::Value::String(text.to_string()).try_into::<T>().unwrap(), *v);
        }
        let e = "nope".parse::<T>().unwrap_err();
        assert_eq!(e, format!("unknown value `nope`; valid: {}", texts.join(", ")));
        let e = toml::Value::String("nope".into()).try_into::<T>().unwrap_err().to_string();
        assert!(texts.iter().all(|t| e.contains(&format!("`{t}`"))), "{e}");
    }

    #[test]
    fn choices_read_and_write_their_config_spelling() {
        round_trip(DataKind::ALL, &["builtin", "imagefolder", "latents"]);
        round_trip(PrecisionSetting::ALL, &["auto", "fp32", "bf16"]);
        round_trip(Extractor::ALL, &["builtin", "inception"]);
        round_trip(SamplerKind::ALL, &["ddpm", "ddim"]);
    }

    #[test]
    fn flags_take_the_config_spelling() {
        use clap::ValueEnum;
        for p in PrecisionSetting::ALL {
            assert_eq!(p.to_possible_value().unwrap().get_name(), p.as_str());
        }
        for s in SamplerKind::ALL {
            assert_eq!(s.to_possible_value().unwrap().get_name(), s.as_str());
        }
    }

    #[test]
    fn a_sampling_knows_its_sampler_and_keeps_its_text() {
        for (text, sampler) in [("ddim25", SamplerKind::Ddim), ("250", SamplerKind::Ddpm), ("10,20,30", SamplerKind::Ddpm), ("", SamplerKind::Ddpm), (" 100, 100", SamplerKind::Ddpm)] {
            let s: Sampling = text.parse().unwrap();
            assert_eq!((s.sampler(), s.respacing(), s.to_string()), (sampler, text, text.to_string()));
            assert_eq!(toml::Value::try_from(&s).unwrap(), toml::Value::String(text.into()));
            assert_eq!(toml::Value::String(text.into()).try_into::<Sampling>().unwrap(), s);
            assert_eq!(format!("{s:?}"), format!("{text:?}"));
        }
        assert_eq!(Sampling::new(SamplerKind::Ddpm, 250).unwrap().respacing(), "250");
        assert_eq!(Sampling::new(SamplerKind::Ddim, 50).unwrap(), "ddim50".parse().unwrap());
        // Checked with the respacing's own rules, saying what is valid.
        let e = "ddim49".parse::<Sampling>().unwrap_err();
        assert!(e.starts_with("`ddim49`: no integer stride gives exactly 49 of 1000 steps") && e.contains("\"ddimN\""), "{e}");
        assert!("fast".parse::<Sampling>().unwrap_err().contains("expected step counts"));
        assert!(Sampling::new(SamplerKind::Ddpm, 0).is_err());
        let e = toml::Value::String("1001".into()).try_into::<Sampling>().unwrap_err().to_string();
        assert!(e.contains("cannot take 1001 steps"), "{e}");
    }
}
