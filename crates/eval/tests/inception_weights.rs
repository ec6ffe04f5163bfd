//! Weights: import of pytorch-fid's `.pth` (torch.save'd state dict) and loading.
//!
//! The real file is 95 MB, so the end-to-end import test makes a full-size `.pth` at test
//! time: the closed-form weights (see inception_support) written by Rust as safetensors,
//! `torch.save`d by Python (scripts/reference/make_inception_fixtures.py --pth, torch +
//! numpy only), imported by `import_weights`, loaded, and run against the committed
//! pytorch-fid outputs. It needs a Python with torch (the CI venv has it); without one it
//! says so and returns, unless DITBENCH_REQUIRE_PYTHON=1, which turns that into a failure.
//! The error paths use a small committed `.pth` (bad_keys.pth) and run everywhere.

mod inception_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use ditbench_eval::inception::{
    default_weights_path, import_weights, InceptionFid, Want, WEIGHTS_URL,
};
use ditbench_eval::EvalError;
use inception_support::*;
use tch::{Device, Tensor};

fn python_with_torch() -> Option<PathBuf> {
    let mut candidates = vec![repo_root().join(".venv/bin/python")];
    candidates.push("python3".into());
    candidates.push("python".into());
    for p in candidates {
        let ok = Command::new(&p)
            .args(["-c", "import torch, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(p);
        }
    }
    None
}

#[test]
fn import_then_load_reproduces_pytorch_fid() {
    let Some(python) = python_with_torch() else {
        if std::env::var("DITBENCH_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!("DITBENCH_REQUIRE_PYTHON=1 but no python with torch and numpy was found");
        }
        eprintln!("SKIPPED import_then_load_reproduces_pytorch_fid: no python with torch + numpy");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("closed_form.safetensors");
    let sd = closed_form_state_dict();
    Tensor::write_safetensors(&sd, &src).unwrap();
    let script = repo_root().join("scripts/reference/make_inception_fixtures.py");
    for legacy in [false, true] {
        let pth = dir
            .path()
            .join(if legacy { "legacy.pth" } else { "zip.pth" });
        let mut cmd = Command::new(&python);
        cmd.arg(&script).arg("--pth").arg(&src).arg(&pth);
        if legacy {
            cmd.arg("--legacy"); // pre-1.6 format + num_batches_tracked buffers
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let converted = dir.path().join("weights").join("inception.safetensors");
        let n = import_weights(&pth, &converted).unwrap();
        assert_eq!(
            n,
            sd.len(),
            "every parameter written, num_batches_tracked dropped"
        );
        // The converted file holds exactly the tensors that went in.
        let back: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&converted)
            .unwrap()
            .into_iter()
            .collect();
        for (name, t) in &sd {
            assert!(
                back[name].equal(t),
                "{name} changed in import ({})",
                pth.display()
            );
        }
        let model = InceptionFid::load(&converted, Device::Cpu).unwrap();
        let out = model
            .forward_uint8_nhwc(&closed_form_images(2, 64, 64), Want::ALL)
            .unwrap();
        let exp = expected();
        for (what, got) in [
            ("pool3", out.pool3.unwrap()),
            ("logits", out.logits.unwrap()),
            ("spatial", out.spatial.unwrap()),
        ] {
            let e = rel_err(&got, &exp[&format!("2x64x64/{what}")]);
            assert!(e < 1e-4, "{what}: relative error {e:e} ({})", pth.display());
        }
    }
}

#[test]
fn wrong_keys_and_shapes_are_listed() {
    // bad_keys.pth: Conv2d_1a_3x3.conv.weight as 32×3×2×2, an AuxLogits key, nothing else.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.safetensors");
    let pth = fixture_dir().join("bad_keys.pth");
    let err = import_weights(&pth, &out).unwrap_err();
    assert!(matches!(err, EvalError::Weights(_)), "{err:?}");
    let m = err.to_string();
    assert!(m.contains("bad_keys.pth"), "{m}");
    assert!(m.contains("471 missing"), "{m}");
    assert!(m.contains("1 unexpected (AuxLogits.fc.weight)"), "{m}");
    assert!(
        m.contains("Conv2d_1a_3x3.conv.weight: found [32, 3, 2, 2], expected [32, 3, 3, 3]"),
        "{m}"
    );
    assert!(m.contains(WEIGHTS_URL), "{m}");
    assert!(!out.exists(), "nothing written on error");
}

#[test]
fn unreadable_or_missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.safetensors");
    let missing = dir.path().join("nope.pth");
    let m = import_weights(&missing, &out).unwrap_err().to_string();
    assert!(m.contains("nope.pth") && m.contains(WEIGHTS_URL), "{m}");

    let garbage = dir.path().join("garbage.pth");
    std::fs::write(&garbage, b"this is not a torch file").unwrap();
    let m = import_weights(&garbage, &out).unwrap_err().to_string();
    assert!(
        m.contains("garbage.pth") && m.contains("cannot read"),
        "{m}"
    );
    assert!(!out.exists());

    // load: a missing file names what to download and the command that converts it.
    let m = InceptionFid::load(&dir.path().join("absent.safetensors"), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(m.contains("absent.safetensors"), "{m}");
    assert!(m.contains(WEIGHTS_URL), "{m}");
    assert!(m.contains("ditbench fid import-weights"), "{m}");

    // load: a safetensors file with the wrong tensors.
    let wrong = dir.path().join("wrong.safetensors");
    Tensor::write_safetensors(
        &[(
            "fc.weight",
            Tensor::zeros([3, 3], (tch::Kind::Float, Device::Cpu)),
        )],
        &wrong,
    )
    .unwrap();
    let m = InceptionFid::load(&wrong, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("wrong.safetensors")
            && m.contains("fc.weight: found [3, 3], expected [1008, 2048]"),
        "{m}"
    );

    let notst = dir.path().join("text.safetensors");
    std::fs::write(&notst, b"hello").unwrap();
    let m = InceptionFid::load(&notst, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("text.safetensors") && m.contains("not a safetensors file"),
        "{m}"
    );
}

#[test]
fn default_weights_path_follows_ditbench_cache() {
    // Only this test in this binary reads DITBENCH_CACHE.
    let prev = std::env::var_os("DITBENCH_CACHE");
    std::env::set_var("DITBENCH_CACHE", "/some/cache");
    assert_eq!(
        default_weights_path(),
        Path::new("/some/cache/weights/pt_inception-2015-12-05.safetensors")
    );
    std::env::remove_var("DITBENCH_CACHE");
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap();
    assert_eq!(
        default_weights_path(),
        home.join(".cache/ditbench/weights/pt_inception-2015-12-05.safetensors")
    );
    if let Some(p) = prev {
        std::env::set_var("DITBENCH_CACHE", p);
    }
}
