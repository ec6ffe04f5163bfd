//! Tests of the bridge on the CPU (CUDA parts only where CUDA is available).
//!
//! The reference for checkpointing is the same block run without it: checkpointing must
//! not change the loss or any gradient. For autocast it is the dtype PyTorch's CPU
//! autocast gives matmuls (bf16/fp16) and leaves elementwise ops (fp32).

use ditbench_torchext::{
    checkpoint, cuda_memory_stats, process_peak_rss_bytes, set_tf32, tf32_enabled, AutocastGuard,
    Error,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Serialises the tests that seed libtorch's global generator.
static SEED: Mutex<()> = Mutex::new(());

const DIM: i64 = 32;
const HEADS: i64 = 4;

/// A DiT block (adaLN modulation, attention, GELU-tanh MLP, gated residuals) made of tch
/// layers. Owning only tensors, a shallow clone of it can move into a checkpoint closure
/// and still accumulate gradients into the same parameters.
struct Block {
    ada: nn::Linear,
    qkv: nn::Linear,
    proj: nn::Linear,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

fn shallow(l: &nn::Linear) -> nn::Linear {
    nn::Linear {
        ws: l.ws.shallow_clone(),
        bs: l.bs.as_ref().map(Tensor::shallow_clone),
    }
}

impl Block {
    fn new(p: nn::Path) -> Self {
        let c = Default::default();
        Self {
            ada: nn::linear(&p / "ada", DIM, 6 * DIM, c),
            qkv: nn::linear(&p / "qkv", DIM, 3 * DIM, c),
            proj: nn::linear(&p / "proj", DIM, DIM, c),
            fc1: nn::linear(&p / "fc1", DIM, 4 * DIM, c),
            fc2: nn::linear(&p / "fc2", 4 * DIM, DIM, c),
        }
    }

    fn shallow_clone(&self) -> Self {
        Self {
            ada: shallow(&self.ada),
            qkv: shallow(&self.qkv),
            proj: shallow(&self.proj),
            fc1: shallow(&self.fc1),
            fc2: shallow(&self.fc2),
        }
    }

    fn forward(&self, x: &Tensor, c: &Tensor) -> Tensor {
        let m = self.ada.forward(&c.silu()).unsqueeze(1).chunk(6, -1);
        let norm = |x: &Tensor, shift: &Tensor, scale: &Tensor| {
            x.layer_norm([DIM], None::<Tensor>, None::<Tensor>, 1e-6, false) * (scale + 1) + shift
        };
        let (b, n) = (x.size()[0], x.size()[1]);
        let qkv = self
            .qkv
            .forward(&norm(x, &m[0], &m[1]))
            .reshape([b, n, 3, HEADS, DIM / HEADS]);
        let qkv = qkv.permute([2, 0, 3, 1, 4]);
        let a = Tensor::scaled_dot_product_attention(
            &qkv.get(0),
            &qkv.get(1),
            &qkv.get(2),
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let a = self.proj.forward(&a.transpose(1, 2).reshape([b, n, DIM]));
        let x = x + &m[2] * a;
        let h = self.fc1.forward(&norm(&x, &m[3], &m[4])).gelu("tanh");
        &x + &m[5] * self.fc2.forward(&h)
    }
}

struct Run {
    loss: Tensor,
    param_grads: Vec<(String, Tensor)>,
    x_grad: Tensor,
    c_grad: Tensor,
}

/// One training step's forward and backward of a 3-block stack on fixed inputs, the
/// forward under bf16 autocast if asked and the backward outside it (as a training step
/// does). The gradients are copied out and zeroed so that the next run starts clean.
fn run(
    vs: &nn::VarStore,
    blocks: &[Block],
    x0: &Tensor,
    c0: &Tensor,
    checkpointed: bool,
    bf16: bool,
) -> Run {
    let guard = bf16.then(|| AutocastGuard::new(x0.device(), Kind::BFloat16).unwrap());
    let x_in = x0.detach().requires_grad_(true);
    let c = c0.detach().requires_grad_(true);
    let mut x = x_in.shallow_clone();
    for block in blocks {
        x = if checkpointed {
            let block = block.shallow_clone();
            checkpoint(&[&x, &c], move |t| block.forward(&t[0], &t[1])).unwrap()
        } else {
            block.forward(&x, &c)
        };
    }
    let loss = x.square().mean(Kind::Float);
    drop(guard);
    loss.backward();
    let mut param_grads: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, mut v)| {
            let g = v.grad().copy();
            v.zero_grad();
            (name, g)
        })
        .collect();
    param_grads.sort_by(|a, b| a.0.cmp(&b.0));
    Run {
        loss: loss.detach(),
        param_grads,
        x_grad: x_in.grad(),
        c_grad: c.grad(),
    }
}

/// Asserts that the checkpointed run matches the plain one within a relative `tol`
/// (max |difference| / max |plain|) for the loss and every gradient.
fn assert_same(plain: &Run, ckpt: &Run, tol: f64) {
    assert_eq!(
        plain.param_grads.len(),
        30,
        "5 linear layers × (weight, bias) × 3 blocks"
    );
    let inputs = [
        ("x", &plain.x_grad, &ckpt.x_grad),
        ("c", &plain.c_grad, &ckpt.c_grad),
    ];
    let params = plain
        .param_grads
        .iter()
        .zip(&ckpt.param_grads)
        .map(|((n, g), (_, h))| (n.as_str(), g, h));
    let all = [("loss", &plain.loss, &ckpt.loss)]
        .into_iter()
        .chain(inputs)
        .chain(params);
    for (name, g, h) in all {
        assert!(g.defined() && h.defined(), "{name}: gradient missing");
        let scale = g.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{name}: zero gradient");
        let diff = (g - h).abs().max().double_value(&[]) / scale;
        assert!(diff <= tol, "{name}: relative difference {diff}");
    }
}

fn stack(device: Device) -> (nn::VarStore, Vec<Block>, Tensor, Tensor) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let blocks = (0..3).map(|i| Block::new(vs.root() / i)).collect();
    let x = Tensor::randn([2, 16, DIM], (Kind::Float, device));
    let c = Tensor::randn([2, DIM], (Kind::Float, device));
    (vs, blocks, x, c)
}

#[test]
fn checkpointing_leaves_loss_and_every_gradient_unchanged() {
    let _seed = SEED.lock().unwrap_or_else(|e| e.into_inner());
    let (vs, blocks, x, c) = stack(Device::Cpu);
    let plain = run(&vs, &blocks, &x, &c, false, false);
    let ckpt = run(&vs, &blocks, &x, &c, true, false);
    // The same kernels on the same data: on the CPU not just close but bit-identical.
    assert_same(&plain, &ckpt, 0.0);
}

#[test]
fn recomputation_runs_under_the_forward_autocast_state() {
    let _seed = SEED.lock().unwrap_or_else(|e| e.into_inner());
    let (vs, blocks, x, c) = stack(Device::Cpu);
    // The backward runs outside autocast: a recomputation in fp32 would give gradients
    // that differ at bf16's precision.
    let plain = run(&vs, &blocks, &x, &c, false, true);
    let ckpt = run(&vs, &blocks, &x, &c, true, true);
    let fp32 = run(&vs, &blocks, &x, &c, false, false);
    let bf16_vs_fp32 = (&plain.loss - &fp32.loss).abs().double_value(&[]);
    assert!(
        bf16_vs_fp32 > 1e-4,
        "autocast was not on: bf16 and fp32 loss differ by {bf16_vs_fp32}"
    );
    assert_same(&plain, &ckpt, 0.0);
}

/// The same on a GPU, where the backward runs on autograd's device thread. Flash
/// attention's backward sums with atomics, so only closeness is asked for. Skipped
/// where CUDA is not available.
#[test]
fn checkpointing_on_cuda_under_bf16_autocast_matches_plain() {
    if !tch::Cuda::is_available() {
        return;
    }
    let _seed = SEED.lock().unwrap_or_else(|e| e.into_inner());
    let (vs, blocks, x, c) = stack(Device::Cuda(0));
    let plain = run(&vs, &blocks, &x, &c, false, true);
    let ckpt = run(&vs, &blocks, &x, &c, true, true);
    assert_eq!(plain.loss.kind(), Kind::Float);
    assert_same(&plain, &ckpt, 1e-2);
}

#[test]
fn inputs_that_need_no_grad_still_give_parameter_gradients() {
    let w = Tensor::from_slice(&[3.0f32]).requires_grad_(true);
    let x = Tensor::from_slice(&[2.0f32]);
    let w2 = w.shallow_clone();
    let y = checkpoint(&[&x], move |t| &t[0] * &w2).unwrap();
    y.sum(Kind::Float).backward();
    assert_eq!(w.grad().double_value(&[0]), 2.0);
}

#[test]
fn the_closure_is_freed_with_the_autograd_graph() {
    let token = Arc::new(());
    let held = token.clone();
    let x = Tensor::from_slice(&[1.0f32, 2.0]).requires_grad_(true);
    let y = checkpoint(&[&x], move |t| {
        let _keep = &held;
        &t[0] * &t[0]
    })
    .unwrap();
    assert_eq!(
        Arc::strong_count(&token),
        2,
        "the graph holds the closure until backward"
    );
    y.sum(Kind::Float).backward();
    assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), [2.0, 4.0]);
    drop(y);
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "dropping the output frees the closure"
    );

    // Without grad mode there is no graph: the closure is freed at once.
    let held = token.clone();
    let y = tch::no_grad(|| {
        checkpoint(&[&x], move |t| {
            let _keep = &held;
            &t[0] + 1
        })
    })
    .unwrap();
    assert_eq!(Vec::<f32>::try_from(&y).unwrap(), [2.0, 3.0]);
    assert_eq!(Arc::strong_count(&token), 1);
}

#[test]
fn a_panicking_closure_becomes_an_error_in_forward_and_in_backward() {
    let x = Tensor::from_slice(&[1.0f32]).requires_grad_(true);
    let err = checkpoint(&[&x], |_| panic!("forward failed")).unwrap_err();
    assert!(
        matches!(&err, Error::Torch(m) if m.contains("forward failed")),
        "{err}"
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let y = checkpoint(&[&x], move |t| {
        if counter.fetch_add(1, Ordering::SeqCst) == 1 {
            panic!("recomputation failed");
        }
        &t[0] * 2
    })
    .unwrap();
    let err = y.sum(Kind::Float).f_backward().unwrap_err();
    assert!(err.to_string().contains("recomputation failed"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn cpu_autocast_computes_matmuls_in_the_chosen_dtype_and_restores_on_drop() {
    let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
    assert_eq!(a.matmul(&a).kind(), Kind::Float);
    {
        let _outer = AutocastGuard::new(Device::Cpu, Kind::Half).unwrap();
        assert_eq!(a.matmul(&a).kind(), Kind::Half);
        {
            let _inner = AutocastGuard::new(Device::Cpu, Kind::BFloat16).unwrap();
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
            // Elementwise ops are not on autocast's lists.
            assert_eq!((&a + 1).kind(), Kind::Float);
        }
        assert_eq!(a.matmul(&a).kind(), Kind::Half);
    }
    assert_eq!(a.matmul(&a).kind(), Kind::Float);
}

#[test]
fn autocast_rejects_what_torch_cannot_do() {
    let err = AutocastGuard::new(Device::Cpu, Kind::Float).unwrap_err();
    assert!(matches!(err, Error::AutocastDtype(Kind::Float)), "{err}");
    let err = AutocastGuard::new(Device::Mps, Kind::BFloat16).unwrap_err();
    assert!(matches!(err, Error::AutocastDevice(Device::Mps)), "{err}");
    if !tch::Cuda::is_available() {
        let err = AutocastGuard::new(Device::Cuda(0), Kind::BFloat16).unwrap_err();
        assert!(matches!(err, Error::CudaUnavailable), "{err}");
    }
}

#[test]
fn tf32_flag_round_trips() {
    let initial = tf32_enabled().unwrap();
    set_tf32(true).unwrap();
    assert!(tf32_enabled().unwrap());
    set_tf32(false).unwrap();
    assert!(!tf32_enabled().unwrap());
    set_tf32(initial).unwrap();
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line[6..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn peak_rss_covers_a_large_allocation() {
    const MIB: u64 = 1 << 20;
    let before = rss_bytes();
    let big = Tensor::ones([64 * MIB as i64], (Kind::Float, Device::Cpu)); // 256 MiB, touched
    let peak = process_peak_rss_bytes().unwrap();
    assert!(
        peak >= before + 250 * MIB,
        "peak {peak} B, RSS before {before} B"
    );
    drop(big);
}

#[test]
fn cuda_memory_stats_follow_an_allocation_or_are_absent_without_cuda() {
    if !tch::Cuda::is_available() {
        assert_eq!(cuda_memory_stats(0).unwrap(), None);
        return;
    }
    let n = tch::Cuda::device_count() as usize;
    assert_eq!(cuda_memory_stats(n).unwrap(), None);
    let before = cuda_memory_stats(0).unwrap().unwrap();
    let t = Tensor::zeros([16 << 20], (Kind::Float, Device::Cuda(0))); // 64 MiB
    let during = cuda_memory_stats(0).unwrap().unwrap();
    assert_eq!(during.allocated_bytes - before.allocated_bytes, 64 << 20);
    drop(t);
    let after = cuda_memory_stats(0).unwrap().unwrap();
    assert_eq!(after.allocated_bytes, before.allocated_bytes);
    assert!(after.peak_allocated_bytes >= during.allocated_bytes);
    ditbench_torchext::reset_cuda_peak(0).unwrap();
    assert_eq!(
        cuda_memory_stats(0).unwrap().unwrap().peak_allocated_bytes,
        after.allocated_bytes
    );
}
