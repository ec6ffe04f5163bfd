//! [`Model`]: a DiT and the VarStore that owns its weights.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{nn, Device};

use crate::{checkpoint, DiT, DiTConfig, ModelError};

/// A DiT together with the VarStore that owns its weights.
#[derive(Debug)]
pub struct Model {
    pub vs: nn::VarStore,
    pub dit: DiT,
}

impl Model {
    /// A freshly initialised model (official initialisation).
    pub fn new(config: &DiTConfig, device: Device) -> Result<Self, ModelError> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let dit = DiT::new(&vs.root(), config)?;
        Ok(Self { vs, dit })
    }

    pub fn config(&self) -> &DiTConfig {
        &self.dit.config
    }

    /// Parameters actually allocated (the positional embedding included).
    pub fn allocated_params(&self) -> u64 {
        self.vs.variables().values().map(|t| t.numel() as u64).sum()
    }

    /// Loads weights saved by [`Model::save`] or `ditbench import`. When `config` is
    /// `None` the config stored in the file is used.
    pub fn load(path: &Path, config: Option<&DiTConfig>, device: Device) -> Result<Self, ModelError> {
        let file = checkpoint::read_safetensors(path)?;
        let stored = checkpoint::config_from_metadata(&file.metadata, path)?;
        let config = match (config, stored) {
            (Some(c), _) => c.clone(),
            (None, Some(c)) => c,
            (None, None) => {
                return Err(ModelError::Checkpoint {
                    path: path.display().to_string(),
                    problem: format!(
                        "no model config in the file's metadata ({}); pass the model name",
                        checkpoint::CONFIG_KEY
                    ),
                })
            }
        };
        let model = Self::new(&config, device)?;
        checkpoint::load_into_varstore(&model.vs, &file.tensors, path)?;
        Ok(model)
    }

    /// Saves every variable under its official name, with the config in the metadata.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        self.save_with_metadata(path, BTreeMap::new())
    }

    pub fn save_with_metadata(
        &self,
        path: &Path,
        mut metadata: BTreeMap<String, String>,
    ) -> Result<(), ModelError> {
        let (k, v) = checkpoint::config_to_metadata(self.config());
        metadata.insert(k, v);
        let mut tensors: Vec<(String, tch::Tensor)> = self.vs.variables().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        checkpoint::write_safetensors_atomic(path, &tensors, metadata)
    }
}
