//! The Inception-v3 of FID, exactly as pytorch-fid 0.3.0 builds it (`FIDInceptionV3`:
//! torchvision's Inception3 with `num_classes=1008`, no aux head, and the blocks patched to
//! match the TensorFlow graph `inception-2015-12-05` that the FID paper used), in tch.
//!
//! What pytorch-fid does, and this module reproduces:
//! * images in [0, 1] are resized to 299×299 with `F.interpolate(mode="bilinear",
//!   align_corners=False)`, then scaled by `2x − 1`;
//! * `Mixed_5b/5c/5d` (FIDInceptionA), `Mixed_6b…6e` (FIDInceptionC) and `Mixed_7b`
//!   (FIDInceptionE_1) average-pool their pool branch with `count_include_pad=False`
//!   (TensorFlow does not count the padding); `Mixed_7c` (FIDInceptionE_2) max-pools it;
//!   `Mixed_6a`/`Mixed_7a` are torchvision's InceptionB/D; BatchNorm eps 0.001;
//! * pool3 is the 2048-d global average pool after `Mixed_7c`.
//!
//! DiT images arrive in [-1, 1] ([`FeatureExtractor`]); they are mapped to [0, 1] first,
//! so the resize sees what pytorch-fid sees. uint8 NHWC batches (ADM `.npz` archives,
//! PNGs) go through [`InceptionFid::forward_uint8_nhwc`], which divides by 255 as
//! torchvision's `ToTensor` does in pytorch-fid's `fid_score.py`.
//!
//! Outputs of one forward pass ([`Want`] chooses; the network stops after `Mixed_6e` when
//! pool3 and logits are not wanted):
//! * `pool3`: N×2048, FID's features.
//! * `logits`: N×1008, `fc(pool3)` with its bias, as torchvision's forward computes them.
//!   pytorch-fid itself never uses `fc` (it has no Inception Score). ADM's evaluator and
//!   the original Inception Score code (openai/improved-gan) use the TF graph's
//!   `softmax/logits/MatMul` weight only, i.e. `pool3 · Wᵀ` **without the bias**: that is
//!   `logits_unbiased`. Use it (softmax over all 1008 classes) to match ADM's IS.
//! * `spatial`: N×2023, sFID's features. ADM's evaluator takes the TF tensor
//!   `mixed_6/conv:0` and keeps `[..., :7]` of its NHWC layout, flattened per image. In the
//!   TF graph `mixed` … `mixed_10` are `Mixed_5b` … `Mixed_7c` in order, so `mixed_6` is
//!   `Mixed_6d`, and `mixed_6/conv` is its 1×1 branch: the TF→PyTorch weight map of
//!   torch-fidelity (the one pytorch-fid's port follows) maps `mixed_6/conv/conv2d_params`
//!   and `mixed_6/conv/batchnorm` to `Mixed_6d.branch1x1.{conv,bn}`. The TF node
//!   `mixed_6/conv` is that layer's ReLU output, so `spatial` is
//!   `Mixed_6d.branch1x1(x)` (conv, BN, ReLU), 192×17×17, channels 0..7, flattened in
//!   (h, w, c) order as ADM does, so reference statistics from ADM's `.npz` files line up
//!   coordinate by coordinate. (Some ports take `Mixed_6e` here; that is `mixed_7`.)
//! * `mixed_6e`: N×768×17×17, the output of `Mixed_6e` (pytorch-fid's 768-d block 2,
//!   "pre-aux classifier features").
//!
//! Caveat: these are pytorch-fid's numbers. ADM's TensorFlow evaluator feeds uint8
//! images to the TF graph, which resizes with TF1's `ResizeBilinear` (no half-pixel
//! centres) and scales by `(x − 128)/128`; for images that are not 299×299 its features
//! differ slightly from pytorch-fid's (FIDs typically agree to a few tenths of a percent,
//! not exactly). No PyTorch port reproduces the TF graph's resize bit for bit.
//!
//! Speed: BatchNorm is folded into each conv once at load (`w·γ/√(σ²+ε)`, bias
//! `β − μ·γ/√(σ²+ε)`, in f64 then rounded to f32); the parity test bounds the effect.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::{EvalError, FeatureExtractor};

/// Where pytorch-fid's weights are published (a `torch.save`d state dict).
pub const WEIGHTS_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
/// File name of the converted weights under `<cache>/weights/`.
pub const WEIGHTS_FILE: &str = "pt_inception-2015-12-05.safetensors";
pub const NUM_CLASSES: i64 = 1008;
pub const POOL3_DIM: i64 = 2048;
/// ADM's sFID features: 17×17 positions × the first 7 channels of `mixed_6/conv`.
pub const SPATIAL_CHANNELS: i64 = 7;
pub const SPATIAL_DIM: i64 = 17 * 17 * SPATIAL_CHANNELS;
pub const MIXED_6E_CHANNELS: i64 = 768;
/// TensorFlow's BatchNorm epsilon, kept by torchvision's BasicConv2d.
const BN_EPS: f64 = 0.001;
const INPUT_SIZE: i64 = 299;

/// `$DITBENCH_CACHE/weights/pt_inception-2015-12-05.safetensors`, the cache defaulting to
/// `~/.cache/ditbench`.
pub fn default_weights_path() -> PathBuf {
    crate::cache_dir().join("weights").join(WEIGHTS_FILE)
}

/// One BasicConv2d (conv without bias, BatchNorm, ReLU) of the architecture.
#[derive(Clone, Debug)]
struct ConvSpec {
    name: String,
    cin: i64,
    cout: i64,
    kernel: [i64; 2],
    stride: i64,
    padding: [i64; 2],
}

/// Every BasicConv2d in torchvision's registration order (= state-dict order).
fn conv_specs() -> Vec<ConvSpec> {
    let mut v = Vec::new();
    let mut c =
        |name: String, cin: i64, cout: i64, kernel: [i64; 2], stride: i64, padding: [i64; 2]| {
            v.push(ConvSpec {
                name,
                cin,
                cout,
                kernel,
                stride,
                padding,
            })
        };
    let s = |x: &str| x.to_string();
    c(s("Conv2d_1a_3x3"), 3, 32, [3, 3], 2, [0, 0]);
    c(s("Conv2d_2a_3x3"), 32, 32, [3, 3], 1, [0, 0]);
    c(s("Conv2d_2b_3x3"), 32, 64, [3, 3], 1, [1, 1]);
    c(s("Conv2d_3b_1x1"), 64, 80, [1, 1], 1, [0, 0]);
    c(s("Conv2d_4a_3x3"), 80, 192, [3, 3], 1, [0, 0]);
    for (m, cin, pool) in [
        ("Mixed_5b", 192, 32),
        ("Mixed_5c", 256, 64),
        ("Mixed_5d", 288, 64),
    ] {
        c(format!("{m}.branch1x1"), cin, 64, [1, 1], 1, [0, 0]);
        c(format!("{m}.branch5x5_1"), cin, 48, [1, 1], 1, [0, 0]);
        c(format!("{m}.branch5x5_2"), 48, 64, [5, 5], 1, [2, 2]);
        c(format!("{m}.branch3x3dbl_1"), cin, 64, [1, 1], 1, [0, 0]);
        c(format!("{m}.branch3x3dbl_2"), 64, 96, [3, 3], 1, [1, 1]);
        c(format!("{m}.branch3x3dbl_3"), 96, 96, [3, 3], 1, [1, 1]);
        c(format!("{m}.branch_pool"), cin, pool, [1, 1], 1, [0, 0]);
    }
    c(s("Mixed_6a.branch3x3"), 288, 384, [3, 3], 2, [0, 0]);
    c(s("Mixed_6a.branch3x3dbl_1"), 288, 64, [1, 1], 1, [0, 0]);
    c(s("Mixed_6a.branch3x3dbl_2"), 64, 96, [3, 3], 1, [1, 1]);
    c(s("Mixed_6a.branch3x3dbl_3"), 96, 96, [3, 3], 2, [0, 0]);
    for (m, c7) in [
        ("Mixed_6b", 128),
        ("Mixed_6c", 160),
        ("Mixed_6d", 160),
        ("Mixed_6e", 192),
    ] {
        c(format!("{m}.branch1x1"), 768, 192, [1, 1], 1, [0, 0]);
        c(format!("{m}.branch7x7_1"), 768, c7, [1, 1], 1, [0, 0]);
        c(format!("{m}.branch7x7_2"), c7, c7, [1, 7], 1, [0, 3]);
        c(format!("{m}.branch7x7_3"), c7, 192, [7, 1], 1, [3, 0]);
        c(format!("{m}.branch7x7dbl_1"), 768, c7, [1, 1], 1, [0, 0]);
        c(format!("{m}.branch7x7dbl_2"), c7, c7, [7, 1], 1, [3, 0]);
        c(format!("{m}.branch7x7dbl_3"), c7, c7, [1, 7], 1, [0, 3]);
        c(format!("{m}.branch7x7dbl_4"), c7, c7, [7, 1], 1, [3, 0]);
        c(format!("{m}.branch7x7dbl_5"), c7, 192, [1, 7], 1, [0, 3]);
        c(format!("{m}.branch_pool"), 768, 192, [1, 1], 1, [0, 0]);
    }
    c(s("Mixed_7a.branch3x3_1"), 768, 192, [1, 1], 1, [0, 0]);
    c(s("Mixed_7a.branch3x3_2"), 192, 320, [3, 3], 2, [0, 0]);
    c(s("Mixed_7a.branch7x7x3_1"), 768, 192, [1, 1], 1, [0, 0]);
    c(s("Mixed_7a.branch7x7x3_2"), 192, 192, [1, 7], 1, [0, 3]);
    c(s("Mixed_7a.branch7x7x3_3"), 192, 192, [7, 1], 1, [3, 0]);
    c(s("Mixed_7a.branch7x7x3_4"), 192, 192, [3, 3], 2, [0, 0]);
    for (m, cin) in [("Mixed_7b", 1280), ("Mixed_7c", 2048)] {
        c(format!("{m}.branch1x1"), cin, 320, [1, 1], 1, [0, 0]);
        c(format!("{m}.branch3x3_1"), cin, 384, [1, 1], 1, [0, 0]);
        c(format!("{m}.branch3x3_2a"), 384, 384, [1, 3], 1, [0, 1]);
        c(format!("{m}.branch3x3_2b"), 384, 384, [3, 1], 1, [1, 0]);
        c(format!("{m}.branch3x3dbl_1"), cin, 448, [1, 1], 1, [0, 0]);
        c(format!("{m}.branch3x3dbl_2"), 448, 384, [3, 3], 1, [1, 1]);
        c(format!("{m}.branch3x3dbl_3a"), 384, 384, [1, 3], 1, [0, 1]);
        c(format!("{m}.branch3x3dbl_3b"), 384, 384, [3, 1], 1, [1, 0]);
        c(format!("{m}.branch_pool"), cin, 192, [1, 1], 1, [0, 0]);
    }
    v
}

/// pytorch-fid's state-dict keys and shapes, in state-dict order, without the
/// `bn.num_batches_tracked` counters (unused in eval; accepted and ignored on import).
pub fn parameter_shapes() -> Vec<(String, Vec<i64>)> {
    let mut out = Vec::new();
    for c in conv_specs() {
        out.push((
            format!("{}.conv.weight", c.name),
            vec![c.cout, c.cin, c.kernel[0], c.kernel[1]],
        ));
        for p in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{}.bn.{p}", c.name), vec![c.cout]));
        }
    }
    out.push(("fc.weight".into(), vec![NUM_CLASSES, POOL3_DIM]));
    out.push(("fc.bias".into(), vec![NUM_CLASSES]));
    out
}

fn is_ignored_key(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

/// Compares found (name → shape) with [`parameter_shapes`]; the error lists what is
/// missing, unexpected and mis-shaped.
fn check_keys(found: &BTreeMap<String, Vec<i64>>, source: &Path) -> Result<(), EvalError> {
    let wanted: BTreeMap<String, Vec<i64>> = parameter_shapes().into_iter().collect();
    let missing: Vec<&String> = wanted.keys().filter(|k| !found.contains_key(*k)).collect();
    let unexpected: Vec<&String> = found
        .keys()
        .filter(|k| !wanted.contains_key(*k) && !is_ignored_key(k))
        .collect();
    let misshaped: Vec<String> = wanted
        .iter()
        .filter_map(|(k, s)| match found.get(k) {
            Some(f) if f != s => Some(format!("{k}: found {f:?}, expected {s:?}")),
            _ => None,
        })
        .collect();
    if missing.is_empty() && unexpected.is_empty() && misshaped.is_empty() {
        return Ok(());
    }
    fn few<T: std::fmt::Display>(v: &[T]) -> String {
        let shown: Vec<String> = v.iter().take(5).map(|x| x.to_string()).collect();
        let more = if v.len() > 5 {
            format!(", … ({} in all)", v.len())
        } else {
            String::new()
        };
        format!("{}{more}", shown.join(", "))
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("{} missing ({})", missing.len(), few(&missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "{} unexpected ({})",
            unexpected.len(),
            few(&unexpected)
        ));
    }
    if !misshaped.is_empty() {
        parts.push(format!(
            "{} with the wrong shape ({})",
            misshaped.len(),
            few(&misshaped)
        ));
    }
    Err(EvalError::Weights(format!(
        "{}: not pytorch-fid's FIDInceptionV3 state dict ({} tensors expected): {}. Expected \
         the weights of pytorch-fid 0.3.0, {WEIGHTS_URL}",
        source.display(),
        wanted.len(),
        parts.join("; ")
    )))
}

/// Converts pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a `torch.save`d state
/// dict, read without Python or libtorch's loader) to safetensors at `out`, after checking
/// every key and shape. Floats are stored as f32; `num_batches_tracked` is dropped.
/// Writes nothing when anything is off. Returns the number of tensors written.
pub fn import_weights(pth: &Path, out: &Path) -> Result<usize, EvalError> {
    use ditbench_torchfile as tf;
    if !pth.is_file() {
        return Err(EvalError::Weights(format!(
            "{}: no such file; download pytorch-fid's weights from {WEIGHTS_URL}",
            pth.display()
        )));
    }
    let entries = tf::load_state_dict(pth, None).map_err(|e| {
        EvalError::Weights(format!(
            "{}: cannot read as a torch.save file: {e}",
            pth.display()
        ))
    })?;
    let mut found = BTreeMap::new();
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, t) in entries {
        let name = name
            .strip_prefix("module.")
            .map(str::to_string)
            .unwrap_or(name);
        found.insert(name.clone(), t.shape.iter().map(|&s| s as i64).collect());
        if is_ignored_key(&name) {
            continue;
        }
        if !t.dtype.is_float() {
            return Err(EvalError::Weights(format!(
                "{}: tensor {name} has dtype {}, expected a float type",
                pth.display(),
                t.dtype.name()
            )));
        }
        let bytes = match t.dtype {
            tf::DType::F32 => t.data,
            _ => t
                .to_f32_vec()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        data.insert(name, bytes);
    }
    check_keys(&found, pth)?;
    let shapes: HashMap<String, Vec<i64>> = parameter_shapes().into_iter().collect();
    let mut views = Vec::with_capacity(data.len());
    for (name, bytes) in &data {
        let shape: Vec<usize> = shapes[name].iter().map(|&s| s as usize).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, bytes)
            .map_err(|e| EvalError::Weights(format!("{}: {name}: {e}", pth.display())))?;
        views.push((name.clone(), view));
    }
    let mut meta = HashMap::new();
    meta.insert(
        "ditbench.imported_from".to_string(),
        pth.display().to_string(),
    );
    meta.insert(
        "ditbench.network".to_string(),
        "pytorch-fid 0.3.0 FIDInceptionV3".to_string(),
    );
    let io = |e: std::io::Error| EvalError::Io {
        path: out.display().to_string(),
        source: e,
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Written beside the target and renamed, so a crash never leaves a truncated file
    // where `load` would look.
    let tmp = out.with_extension("safetensors.tmp-import");
    safetensors::tensor::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| EvalError::Weights(format!("{}: cannot write: {e}", tmp.display())))?;
    std::fs::rename(&tmp, out).map_err(io)?;
    Ok(data.len())
}

/// Which outputs a forward pass computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    pub pool3: bool,
    /// Both `logits` and `logits_unbiased`.
    pub logits: bool,
    pub spatial: bool,
    pub mixed_6e: bool,
}

impl Want {
    pub const POOL3: Want = Want {
        pool3: true,
        logits: false,
        spatial: false,
        mixed_6e: false,
    };
    /// What ADM's evaluator needs: pool3 (FID, precision/recall, IS through the logits)
    /// and the spatial features (sFID).
    pub const ADM: Want = Want {
        pool3: true,
        logits: true,
        spatial: true,
        mixed_6e: false,
    };
    pub const ALL: Want = Want {
        pool3: true,
        logits: true,
        spatial: true,
        mixed_6e: true,
    };

    fn needs_top(&self) -> bool {
        self.pool3 || self.logits
    }
}

/// Outputs of [`InceptionFid::forward`], f32 on the CPU; `None` where not wanted.
#[derive(Debug, Default)]
pub struct InceptionFeatures {
    /// N×2048.
    pub pool3: Option<Tensor>,
    /// N×1008, `fc(pool3)` with bias.
    pub logits: Option<Tensor>,
    /// N×1008, `pool3 · fc.weightᵀ` (ADM's / improved-gan's Inception Score logits).
    pub logits_unbiased: Option<Tensor>,
    /// N×2023: `Mixed_6d.branch1x1` channels 0..7, flattened (h, w, c) as ADM.
    pub spatial: Option<Tensor>,
    /// N×768×17×17.
    pub mixed_6e: Option<Tensor>,
}

/// A conv with its BatchNorm folded in; ReLU follows.
#[derive(Debug)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: [i64; 2],
}

impl Conv {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.weight,
            Some(&self.bias),
            [self.stride, self.stride],
            self.padding,
            [1, 1],
            1,
        )
        .relu_()
    }
}

/// pytorch-fid's Inception-v3 with its weights, ready for inference.
#[derive(Debug)]
pub struct InceptionFid {
    convs: HashMap<String, Conv>,
    fc_weight: Tensor,
    fc_bias: Tensor,
    device: Device,
    /// Images per forward chunk (bounds memory; 50 as pytorch-fid's default).
    pub batch_size: i64,
}

impl InceptionFid {
    /// Loads converted weights (see [`import_weights`]) onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<InceptionFid, EvalError> {
        if !path.is_file() {
            return Err(EvalError::Weights(format!(
                "Inception weights not found at {}. Download pytorch-fid's weights from \
                 {WEIGHTS_URL} and convert them with `ditbench fid import-weights \
                 pt_inception-2015-12-05-6726825d.pth` (writes {})",
                path.display(),
                default_weights_path().display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| EvalError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            EvalError::Weights(format!("{}: not a safetensors file: {e}", path.display()))
        })?;
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(EvalError::Weights(format!(
                    "{}: tensor {name} is {:?}, expected F32",
                    path.display(),
                    view.dtype()
                )));
            }
            let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
            tensors.push((
                name,
                Tensor::f_from_data_size(view.data(), &shape, Kind::Float)?,
            ));
        }
        Self::from_state_dict(tensors, device, path)
    }

    /// Builds the network from named f32 tensors with pytorch-fid's state-dict names
    /// (checked like [`import_weights`]); `source` names them in errors.
    pub fn from_state_dict(
        tensors: Vec<(String, Tensor)>,
        device: Device,
        source: &Path,
    ) -> Result<InceptionFid, EvalError> {
        let found: BTreeMap<String, Vec<i64>> =
            tensors.iter().map(|(k, t)| (k.clone(), t.size())).collect();
        check_keys(&found, source)?;
        let mut map: HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut take = |k: &str| -> Result<Tensor, EvalError> {
            let t = map.remove(k).expect("checked by check_keys");
            Ok(t.f_to_kind(Kind::Double)?)
        };
        let _guard = tch::no_grad_guard();
        let mut convs = HashMap::new();
        for c in conv_specs() {
            let w = take(&format!("{}.conv.weight", c.name))?;
            let gamma = take(&format!("{}.bn.weight", c.name))?;
            let beta = take(&format!("{}.bn.bias", c.name))?;
            let mean = take(&format!("{}.bn.running_mean", c.name))?;
            let var = take(&format!("{}.bn.running_var", c.name))?;
            // Eval-mode BN is an affine map per output channel: fold it into the conv.
            let scale = gamma.f_div(&(var + BN_EPS).f_sqrt()?)?;
            let weight = w.f_mul(&scale.f_view([-1, 1, 1, 1])?)?;
            let bias = beta.f_sub(&mean.f_mul(&scale)?)?;
            let conv = Conv {
                weight: weight
                    .f_to_kind(Kind::Float)?
                    .f_to_device(device)?
                    .f_contiguous()?,
                bias: bias.f_to_kind(Kind::Float)?.f_to_device(device)?,
                stride: c.stride,
                padding: c.padding,
            };
            convs.insert(c.name, conv);
        }
        let fc_weight = take("fc.weight")?
            .f_to_kind(Kind::Float)?
            .f_to_device(device)?;
        let fc_bias = take("fc.bias")?
            .f_to_kind(Kind::Float)?
            .f_to_device(device)?;
        Ok(InceptionFid {
            convs,
            fc_weight,
            fc_bias,
            device,
            batch_size: 50,
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    fn conv(&self, block: &str, name: &str) -> &Conv {
        let key = if block.is_empty() {
            name.to_string()
        } else {
            format!("{block}.{name}")
        };
        &self.convs[&key]
    }

    fn c(&self, block: &str, name: &str, x: &Tensor) -> Tensor {
        self.conv(block, name).forward(x)
    }

    /// FIDInceptionA: average pool without the padding in the count.
    fn inception_a(&self, m: &str, x: &Tensor) -> Tensor {
        let b1 = self.c(m, "branch1x1", x);
        let b5 = self.c(m, "branch5x5_2", &self.c(m, "branch5x5_1", x));
        let b3 = self.c(m, "branch3x3dbl_1", x);
        let b3 = self.c(m, "branch3x3dbl_3", &self.c(m, "branch3x3dbl_2", &b3));
        let bp = x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>);
        let bp = self.c(m, "branch_pool", &bp);
        Tensor::cat(&[b1, b5, b3, bp], 1)
    }

    /// torchvision's InceptionB (Mixed_6a): 35×35 → 17×17.
    fn inception_b(&self, m: &str, x: &Tensor) -> Tensor {
        let b3 = self.c(m, "branch3x3", x);
        let bd = self.c(m, "branch3x3dbl_1", x);
        let bd = self.c(m, "branch3x3dbl_3", &self.c(m, "branch3x3dbl_2", &bd));
        let bp = x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        Tensor::cat(&[b3, bd, bp], 1)
    }

    /// FIDInceptionC; also returns the 1×1 branch (`mixed_N/conv` in the TF graph).
    fn inception_c(&self, m: &str, x: &Tensor) -> (Tensor, Tensor) {
        let b1 = self.c(m, "branch1x1", x);
        let b7 = self.c(m, "branch7x7_1", x);
        let b7 = self.c(m, "branch7x7_3", &self.c(m, "branch7x7_2", &b7));
        let mut bd = self.c(m, "branch7x7dbl_1", x);
        for i in 2..=5 {
            bd = self.c(m, &format!("branch7x7dbl_{i}"), &bd);
        }
        let bp = x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>);
        let bp = self.c(m, "branch_pool", &bp);
        let out = Tensor::cat(&[&b1, &b7, &bd, &bp], 1);
        (out, b1)
    }

    /// torchvision's InceptionD (Mixed_7a): 17×17 → 8×8.
    fn inception_d(&self, m: &str, x: &Tensor) -> Tensor {
        let b3 = self.c(m, "branch3x3_2", &self.c(m, "branch3x3_1", x));
        let mut b7 = self.c(m, "branch7x7x3_1", x);
        for i in 2..=4 {
            b7 = self.c(m, &format!("branch7x7x3_{i}"), &b7);
        }
        let bp = x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        Tensor::cat(&[b3, b7, bp], 1)
    }

    /// FIDInceptionE_1 (`max_pool = false`: average pool without padding in the count)
    /// and FIDInceptionE_2 (`max_pool = true`, as the TF graph's last block).
    fn inception_e(&self, m: &str, x: &Tensor, max_pool: bool) -> Tensor {
        let b1 = self.c(m, "branch1x1", x);
        let b3 = self.c(m, "branch3x3_1", x);
        let b3 = Tensor::cat(
            &[
                self.c(m, "branch3x3_2a", &b3),
                self.c(m, "branch3x3_2b", &b3),
            ],
            1,
        );
        let bd = self.c(m, "branch3x3dbl_1", x);
        let bd = self.c(m, "branch3x3dbl_2", &bd);
        let bd = Tensor::cat(
            &[
                self.c(m, "branch3x3dbl_3a", &bd),
                self.c(m, "branch3x3dbl_3b", &bd),
            ],
            1,
        );
        let bp = if max_pool {
            x.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false)
        } else {
            x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)
        };
        let bp = self.c(m, "branch_pool", &bp);
        Tensor::cat(&[b1, b3, bd, bp], 1)
    }

    /// The network on one chunk of images in [0, 1], NCHW f32 on `self.device`.
    fn forward_unit_chunk(&self, x: &Tensor, want: Want) -> InceptionFeatures {
        // pytorch-fid: F.interpolate(x, (299, 299), bilinear, align_corners=False), 2x − 1.
        let x = x.upsample_bilinear2d([INPUT_SIZE, INPUT_SIZE], false, None, None);
        let x = x * 2.0 - 1.0;
        let x = self.c("", "Conv2d_1a_3x3", &x); // 149×149×32
        let x = self.c("", "Conv2d_2a_3x3", &x); // 147×147×32
        let x = self.c("", "Conv2d_2b_3x3", &x); // 147×147×64
        let x = x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false); // 73×73×64
        let x = self.c("", "Conv2d_3b_1x1", &x); // 73×73×80
        let x = self.c("", "Conv2d_4a_3x3", &x); // 71×71×192
        let x = x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false); // 35×35×192
        let x = self.inception_a("Mixed_5b", &x); // 35×35×256
        let x = self.inception_a("Mixed_5c", &x); // 35×35×288
        let x = self.inception_a("Mixed_5d", &x); // 35×35×288
        let x = self.inception_b("Mixed_6a", &x); // 17×17×768
        let (x, _) = self.inception_c("Mixed_6b", &x);
        let (x, _) = self.inception_c("Mixed_6c", &x);
        let (x, m6d_1x1) = self.inception_c("Mixed_6d", &x);
        let (x, _) = self.inception_c("Mixed_6e", &x); // 17×17×768
        let n = x.size()[0];
        let mut out = InceptionFeatures::default();
        if want.spatial {
            // ADM: NHWC `mixed_6/conv:0`[..., :7], reshaped to N×(17·17·7).
            let s = m6d_1x1.narrow(1, 0, SPATIAL_CHANNELS).permute([0, 2, 3, 1]);
            out.spatial = Some(s.reshape([n, SPATIAL_DIM]));
        }
        if want.mixed_6e {
            out.mixed_6e = Some(x.shallow_clone());
        }
        if want.needs_top() {
            let x = self.inception_d("Mixed_7a", &x); // 8×8×1280
            let x = self.inception_e("Mixed_7b", &x, false); // 8×8×2048
            let x = self.inception_e("Mixed_7c", &x, true); // 8×8×2048
            let pool3 = x.adaptive_avg_pool2d([1, 1]).reshape([n, POOL3_DIM]);
            if want.logits {
                out.logits = Some(pool3.linear(&self.fc_weight, Some(&self.fc_bias)));
                out.logits_unbiased = Some(pool3.matmul(&self.fc_weight.tr()));
            }
            if want.pool3 {
                out.pool3 = Some(pool3);
            }
        }
        out
    }

    /// Runs chunks of `self.batch_size` images in [0, 1] through the network and gathers
    /// the outputs on the CPU.
    fn forward_unit(
        &self,
        unit: impl Fn(i64, i64) -> Result<Tensor, EvalError>,
        n: i64,
        want: Want,
    ) -> Result<InceptionFeatures, EvalError> {
        let _guard = tch::no_grad_guard();
        let mut parts: Vec<InceptionFeatures> = Vec::new();
        let step = self.batch_size.max(1);
        let mut start = 0;
        while start < n {
            let len = step.min(n - start);
            let x = unit(start, len)?;
            let f = self.forward_unit_chunk(&x, want);
            let cpu = |t: Option<Tensor>| -> Result<Option<Tensor>, EvalError> {
                Ok(match t {
                    Some(t) => Some(t.f_to_device(Device::Cpu)?),
                    None => None,
                })
            };
            parts.push(InceptionFeatures {
                pool3: cpu(f.pool3)?,
                logits: cpu(f.logits)?,
                logits_unbiased: cpu(f.logits_unbiased)?,
                spatial: cpu(f.spatial)?,
                mixed_6e: cpu(f.mixed_6e)?,
            });
            start += len;
        }
        let gather = |get: fn(&InceptionFeatures) -> Option<&Tensor>, on: bool, shape: &[i64]| {
            if !on {
                return Ok::<_, EvalError>(None);
            }
            let ts: Vec<&Tensor> = parts.iter().filter_map(get).collect();
            Ok(Some(if ts.is_empty() {
                Tensor::f_zeros(shape, (Kind::Float, Device::Cpu))?
            } else {
                Tensor::f_cat(&ts, 0)?
            }))
        };
        Ok(InceptionFeatures {
            pool3: gather(|f| f.pool3.as_ref(), want.pool3, &[0, POOL3_DIM])?,
            logits: gather(|f| f.logits.as_ref(), want.logits, &[0, NUM_CLASSES])?,
            logits_unbiased: gather(
                |f| f.logits_unbiased.as_ref(),
                want.logits,
                &[0, NUM_CLASSES],
            )?,
            spatial: gather(|f| f.spatial.as_ref(), want.spatial, &[0, SPATIAL_DIM])?,
            mixed_6e: gather(
                |f| f.mixed_6e.as_ref(),
                want.mixed_6e,
                &[0, MIXED_6E_CHANNELS, 17, 17],
            )?,
        })
    }

    /// `images`: N×3×H×W float in [-1, 1] (DiT's sample space), any H, W, any device.
    /// Mapped to [0, 1] and then treated exactly as pytorch-fid treats its input.
    pub fn forward(&self, images: &Tensor, want: Want) -> Result<InceptionFeatures, EvalError> {
        let size = images.size();
        let bad = |problem: String| EvalError::BadInput {
            what: "Inception input images".into(),
            problem,
        };
        if size.len() != 4 || size[1] != 3 {
            return Err(bad(format!(
                "shape {size:?}: expected N×3×H×W (NCHW, RGB) floats in [-1, 1]; for uint8 \
                 N×H×W×3 images use forward_uint8_nhwc"
            )));
        }
        if !images.is_floating_point() {
            return Err(bad(format!(
                "dtype {:?}: expected a float tensor in [-1, 1]; for uint8 N×H×W×3 images use \
                 forward_uint8_nhwc",
                images.kind()
            )));
        }
        if size[2] < 1 || size[3] < 1 {
            return Err(bad(format!("shape {size:?}: empty images")));
        }
        let n = size[0];
        if n > 0 {
            let _guard = tch::no_grad_guard();
            let (lo, hi) = (
                images.f_min()?.double_value(&[]),
                images.f_max()?.double_value(&[]),
            );
            // A little slack for samples that were not clamped; [0, 255] or NaN is a bug.
            if !(lo >= -1.001 && hi <= 1.001) {
                return Err(bad(format!(
                    "values in [{lo}, {hi}]: expected [-1, 1] (DiT's sample space; clamp the \
                     samples, or map [0, 1] images by 2x − 1)"
                )));
            }
        }
        self.forward_unit(
            |start, len| {
                let x = images
                    .f_narrow(0, start, len)?
                    .f_to_device(self.device)?
                    .f_to_kind(Kind::Float)?;
                Ok((x + 1.0) * 0.5)
            },
            n,
            want,
        )
    }

    /// `images`: N×H×W×3 uint8 (ADM `.npz` archives, decoded PNGs), any device. Divided by
    /// 255 as torchvision's `ToTensor` does in pytorch-fid, so the numbers are pytorch-fid's.
    pub fn forward_uint8_nhwc(
        &self,
        images: &Tensor,
        want: Want,
    ) -> Result<InceptionFeatures, EvalError> {
        let size = images.size();
        let bad = |problem: String| EvalError::BadInput {
            what: "Inception input images".into(),
            problem,
        };
        if images.kind() != Kind::Uint8 {
            return Err(bad(format!(
                "dtype {:?}: expected uint8 N×H×W×3 (for float NCHW images in [-1, 1] use forward)",
                images.kind()
            )));
        }
        if size.len() != 4 || size[3] != 3 || size[1] < 1 || size[2] < 1 {
            return Err(bad(format!(
                "shape {size:?}: expected N×H×W×3 (NHWC, RGB) uint8"
            )));
        }
        self.forward_unit(
            |start, len| {
                let x = images.f_narrow(0, start, len)?.f_to_device(self.device)?;
                let x = x
                    .f_permute([0, 3, 1, 2])?
                    .f_to_kind(Kind::Float)?
                    .f_contiguous()?;
                Ok(x / 255.0)
            },
            size[0],
            want,
        )
    }
}

impl FeatureExtractor for InceptionFid {
    fn name(&self) -> &str {
        "inception-v3-pool3"
    }

    fn dim(&self) -> usize {
        POOL3_DIM as usize
    }

    fn features(&self, images: &Tensor) -> Result<Tensor, EvalError> {
        Ok(self
            .forward(images, Want::POOL3)?
            .pool3
            .expect("pool3 requested"))
    }
}
