//! How much memory activation checkpointing saves on the CPU.
//!
//! Trains a few AdamW steps of a stack of DiT blocks (adaLN-Zero style modulation,
//! attention, GELU-tanh MLP; DiT-S/2 at 256 px by default: depth 12, hidden 384, 6 heads,
//! 256 tokens) twice, each in its own child process so that the peak resident set sizes
//! do not mix: once plainly and once with every block checkpointed. The losses must
//! agree (checkpointing changes memory, not results); the peaks are printed.
//!
//! cargo build --locked --workspace --example checkpoint_memory
//! $CARGO_TARGET_DIR/debug/examples/checkpoint_memory [--depth 12] [--hidden 384] [--heads 6]
//!     [--tokens 256] [--batch 8] [--steps 3]

use ditbench_torchext::{checkpoint, process_peak_rss_bytes};
use std::process::Command;
use std::time::Instant;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy)]
struct Shape {
    depth: i64,
    hidden: i64,
    heads: i64,
    tokens: i64,
    batch: i64,
    steps: i64,
}

impl Shape {
    fn parse(args: &[String]) -> Self {
        let mut s = Shape {
            depth: 12,
            hidden: 384,
            heads: 6,
            tokens: 256,
            batch: 8,
            steps: 3,
        };
        for pair in args.chunks(2) {
            let value = || {
                pair.get(1)
                    .and_then(|v| v.parse().ok())
                    .expect("each option needs an integer")
            };
            match pair[0].as_str() {
                "--depth" => s.depth = value(),
                "--hidden" => s.hidden = value(),
                "--heads" => s.heads = value(),
                "--tokens" => s.tokens = value(),
                "--batch" => s.batch = value(),
                "--steps" => s.steps = value(),
                other => panic!("unknown option {other}: use --depth, --hidden, --heads, --tokens, --batch, --steps"),
            }
        }
        s
    }

    fn args(&self) -> Vec<String> {
        [
            ("--depth", self.depth),
            ("--hidden", self.hidden),
            ("--heads", self.heads),
            ("--tokens", self.tokens),
            ("--batch", self.batch),
            ("--steps", self.steps),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }
}

/// A DiT block owning only tensors, so that a shallow clone can move into a checkpoint
/// closure and still accumulate gradients into the same parameters.
struct Block {
    ada: nn::Linear,
    qkv: nn::Linear,
    proj: nn::Linear,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
}

fn shallow(l: &nn::Linear) -> nn::Linear {
    nn::Linear {
        ws: l.ws.shallow_clone(),
        bs: l.bs.as_ref().map(Tensor::shallow_clone),
    }
}

impl Block {
    fn new(p: nn::Path, hidden: i64, heads: i64) -> Self {
        let c = Default::default();
        Self {
            ada: nn::linear(&p / "ada", hidden, 6 * hidden, c),
            qkv: nn::linear(&p / "qkv", hidden, 3 * hidden, c),
            proj: nn::linear(&p / "proj", hidden, hidden, c),
            fc1: nn::linear(&p / "fc1", hidden, 4 * hidden, c),
            fc2: nn::linear(&p / "fc2", 4 * hidden, hidden, c),
            heads,
        }
    }

    fn shallow_clone(&self) -> Self {
        Self {
            ada: shallow(&self.ada),
            qkv: shallow(&self.qkv),
            proj: shallow(&self.proj),
            fc1: shallow(&self.fc1),
            fc2: shallow(&self.fc2),
            heads: self.heads,
        }
    }

    fn forward(&self, x: &Tensor, c: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().unwrap();
        let m = self.ada.forward(&c.silu()).unsqueeze(1).chunk(6, -1);
        let norm = |x: &Tensor, shift: &Tensor, scale: &Tensor| {
            x.layer_norm([d], None::<Tensor>, None::<Tensor>, 1e-6, false) * (scale + 1) + shift
        };
        let qkv = self.qkv.forward(&norm(x, &m[0], &m[1]));
        let qkv = qkv
            .reshape([b, n, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
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
        let x = x + &m[2] * self.proj.forward(&a.transpose(1, 2).reshape([b, n, d]));
        let h = self.fc1.forward(&norm(&x, &m[3], &m[4])).gelu("tanh");
        &x + &m[5] * self.fc2.forward(&h)
    }
}

/// Trains in this process and prints one line for the parent.
fn child(shape: Shape, checkpointed: bool) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let blocks: Vec<Block> = (0..shape.depth)
        .map(|i| Block::new(vs.root() / i, shape.hidden, shape.heads))
        .collect();
    let mut opt = nn::AdamW::default().build(&vs, 1e-4).unwrap();
    let opts = (Kind::Float, Device::Cpu);
    let x0 = Tensor::randn([shape.batch, shape.tokens, shape.hidden], opts);
    let c = Tensor::randn([shape.batch, shape.hidden], opts);
    let target = Tensor::randn([shape.batch, shape.tokens, shape.hidden], opts);
    let baseline = process_peak_rss_bytes().unwrap();
    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..shape.steps {
        let mut x = x0.shallow_clone();
        for block in &blocks {
            x = if checkpointed {
                let block = block.shallow_clone();
                checkpoint(&[&x, &c], move |t| block.forward(&t[0], &t[1])).unwrap()
            } else {
                block.forward(&x, &c)
            };
        }
        let l = (x - &target).square().mean(Kind::Float);
        opt.backward_step(&l);
        loss = l.double_value(&[]);
    }
    let seconds = start.elapsed().as_secs_f64() / shape.steps as f64;
    let peak = process_peak_rss_bytes().unwrap();
    println!("{baseline} {peak} {seconds} {loss:.9}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(mode) = args.first().and_then(|a| a.strip_prefix("--child=")) {
        return child(Shape::parse(&args[1..]), mode == "checkpoint");
    }
    let shape = Shape::parse(&args);
    println!("{shape:?}, CPU, {} threads", tch::get_num_threads());
    println!(
        "{:<12} {:>14} {:>14} {:>10} {:>14}",
        "mode", "baseline MiB", "peak RSS MiB", "s/step", "final loss"
    );
    let mib = |b: f64| b / (1u64 << 20) as f64;
    let mut peaks = vec![];
    for mode in ["plain", "checkpoint"] {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .arg(format!("--child={mode}"))
            .args(shape.args())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{mode} run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let v: Vec<f64> = line
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        println!(
            "{mode:<12} {:>14.0} {:>14.0} {:>10.2} {:>14.9}",
            mib(v[0]),
            mib(v[1]),
            v[2],
            v[3]
        );
        peaks.push((v[1], v[3]));
    }
    let (plain, ckpt) = (peaks[0], peaks[1]);
    // Bit-identical in one process (tests/torchext.rs); across two processes a
    // multi-threaded BLAS may sum in another order (seen once in a dozen runs here, on a
    // loaded machine).
    let loss_diff = (plain.1 - ckpt.1).abs() / plain.1.abs();
    assert!(
        loss_diff < 1e-4,
        "checkpointing changed the loss by {loss_diff:e} (relative)"
    );
    println!(
        "checkpointing saved {:.0} MiB of peak RSS ({:.0} %)",
        mib(plain.0 - ckpt.0),
        100.0 * (plain.0 - ckpt.0) / plain.0
    );
}
