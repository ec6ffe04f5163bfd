//! Shared by the Inception tests: the closed-form weights and images of
//! scripts/reference/make_inception_fixtures.py, computed the same way (splitmix64 over
//! an FNV-1a hash of the name, f64 arithmetic, one rounding to f32), and the fixtures.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use ditbench_eval::inception::{parameter_shapes, InceptionFid};
use tch::{Device, Kind, Tensor};

pub fn fixture_dir() -> PathBuf {
    Path::new(&manifest_dir()).join("tests/fixtures/inception")
}

pub fn repo_root() -> PathBuf {
    Path::new(&manifest_dir()).join("../..")
}

fn fnv1a64(name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// n floats in [0, 1): splitmix64 of seed + (i+1)·golden, top 53 bits.
pub fn uniform(name: &str, n: usize) -> Vec<f64> {
    let seed = fnv1a64(name);
    (0..n as u64)
        .map(|i| {
            let mut x = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            (x >> 11) as f64 * 2f64.powi(-53)
        })
        .collect()
}

pub fn closed_form(name: &str, shape: &[i64]) -> Vec<f32> {
    let n: i64 = shape.iter().product();
    let u = uniform(name, n as usize);
    let f: Box<dyn Fn(f64) -> f64> = if name.ends_with("conv.weight") {
        let fan_in: i64 = shape[1..].iter().product();
        let s = (6.0 / fan_in as f64).sqrt();
        Box::new(move |r| r * s)
    } else if name.ends_with("bn.weight") {
        Box::new(|r| 1.0 + 0.25 * r)
    } else if name.ends_with("bn.bias") || name.ends_with("bn.running_mean") || name == "fc.bias" {
        Box::new(|r| 0.1 * r)
    } else if name.ends_with("bn.running_var") {
        Box::new(|r| 1.0 + 0.25 * (r + 1.0))
    } else if name == "fc.weight" {
        let s = (3.0 / shape[1] as f64).sqrt();
        Box::new(move |r| r * s)
    } else {
        panic!("no closed form for {name}")
    };
    u.into_iter().map(|u| f(2.0 * u - 1.0) as f32).collect()
}

pub fn closed_form_state_dict() -> Vec<(String, Tensor)> {
    parameter_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let v = closed_form(&name, &shape);
            let t = Tensor::from_slice(&v).reshape(&shape);
            (name, t)
        })
        .collect()
}

/// uint8 N×H×W×3: R = horizontal ramp + fine noise, G = vertical ramp + fine noise,
/// B = 4×4 blocks of noise (integer arithmetic only).
pub fn closed_form_images(n: usize, h: usize, w: usize) -> Tensor {
    let tag = format!("image/{n}x{h}x{w}");
    let fine = uniform(&format!("{tag}/fine"), n * h * w * 2);
    let (ch, cw) = (h.div_ceil(4), w.div_ceil(4));
    let cells = uniform(&format!("{tag}/cells"), n * ch * cw);
    let mut px = vec![0u8; n * h * w * 3];
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                let p = (i * h + y) * w + x;
                let f0 = (fine[p * 2] * 32.0).floor() as usize;
                let f1 = (fine[p * 2 + 1] * 32.0).floor() as usize;
                px[p * 3] = ((224 * x) / (w - 1) + f0).min(255) as u8;
                px[p * 3 + 1] = ((224 * y) / (h - 1) + f1).min(255) as u8;
                px[p * 3 + 2] = (cells[(i * ch + y / 4) * cw + x / 4] * 256.0).floor() as u8;
            }
        }
    }
    Tensor::from_slice(&px).reshape([n as i64, h as i64, w as i64, 3])
}

/// max |a − b| / max |b|: the error relative to the scale of the reference.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    (&a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
}

/// The expected outputs (read afresh: tch tensors are Send but not Sync).
pub fn expected() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture_dir().join("expected.safetensors"))
        .expect("expected.safetensors")
        .into_iter()
        .collect()
}

pub fn weights_json() -> &'static serde_json::Value {
    static J: OnceLock<serde_json::Value> = OnceLock::new();
    J.get_or_init(|| {
        let s = std::fs::read_to_string(fixture_dir().join("weights.json")).expect("weights.json");
        serde_json::from_str(&s).expect("weights.json parses")
    })
}

/// The fixture's batches as (n, h, w).
pub fn batches() -> Vec<(usize, usize, usize)> {
    weights_json()["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let v: Vec<usize> = b
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            (v[0], v[1], v[2])
        })
        .collect()
}

/// The network with the closed-form weights, built once per test binary (behind a
/// mutex: tch tensors are not Sync; the tests are CPU-bound anyway).
pub fn model() -> MutexGuard<'static, InceptionFid> {
    static M: OnceLock<Mutex<InceptionFid>> = OnceLock::new();
    M.get_or_init(|| {
        let m = InceptionFid::from_state_dict(
            closed_form_state_dict(),
            Device::Cpu,
            Path::new("closed-form"),
        )
        .expect("closed-form weights build the network");
        Mutex::new(m)
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
