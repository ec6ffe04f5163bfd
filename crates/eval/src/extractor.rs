//! Feature extractors: what a Fréchet distance is measured in.

use tch::Tensor;

use crate::EvalError;

/// A network mapping images to feature vectors.
pub trait FeatureExtractor {
    /// Stable label stored beside every number it produces, e.g. `inception-v3-pool3`
    /// or `builtin-cnn-32px-…`. Distances in a non-Inception space are reported as
    /// `FD_<name>`.
    fn name(&self) -> &str;
    /// Feature dimension.
    fn dim(&self) -> usize;
    /// `images`: N×3×H×W float in [-1, 1] (DiT's sample space), any device.
    /// Returns N×dim features as f32 on the CPU.
    fn features(&self, images: &Tensor) -> Result<Tensor, EvalError>;
}
