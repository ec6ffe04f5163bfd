//! Reads the files PyTorch wrote (tests/fixtures/*.pt, made by
//! scripts/reference/make_torchfile_fixtures.py) and compares every tensor with the values the
//! same script wrote to expected.json from the in-memory tensors before saving.

use std::path::{Path, PathBuf};

use ditbench_torchfile::{
    load, load_state_dict, DType, Error, Format, TensorData, TorchFile, Value,
};
use serde_json::Value as Json;

fn fixture(name: &str) -> PathBuf {
    Path::new(&manifest_dir())
        .join("tests/fixtures")
        .join(name)
}

fn expected() -> Json {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn expected_file(name: &str) -> Json {
    expected()["files"][name].clone()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One tensor against its expected.json entry: dtype, shape, exact bytes, and the values as
/// converted by the TensorData helpers.
fn check_tensor(name: &str, t: &TensorData, want: &Json) {
    assert_eq!(
        t.dtype.name(),
        want["dtype"].as_str().unwrap(),
        "{name}: dtype"
    );
    let shape: Vec<usize> = want["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(t.shape, shape, "{name}: shape");
    assert_eq!(t.numel(), shape.iter().product::<usize>(), "{name}: numel");
    assert_eq!(hex(&t.data), want["hex"].as_str().unwrap(), "{name}: bytes");
    let values = want["values"].as_array().unwrap();
    assert_eq!(values.len(), t.numel(), "{name}: value count");
    match t.dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            // f16/bf16 -> f32 is exact, so the f32 values must equal the reference exactly.
            for (i, (got, want)) in t.to_f32_vec().iter().zip(values).enumerate() {
                let want = want.as_f64().unwrap() as f32;
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{name}[{i}]: {got} vs {want}"
                );
            }
        }
        DType::F64 => {
            for (i, (got, want)) in t.to_f64_vec().iter().zip(values).enumerate() {
                let want = want.as_f64().unwrap();
                assert!(
                    (got - want).abs() <= 1e-15 * want.abs(),
                    "{name}[{i}]: {got} vs {want}"
                );
            }
        }
        _ => {
            let want: Vec<i64> = values.iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(t.to_i64_vec(), want, "{name}: values");
        }
    }
}

fn check_tensors(got: &[(String, TensorData)], want: &Json, strip_prefix: &str) {
    let want: Vec<&Json> = want["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"].as_str().unwrap().starts_with(strip_prefix))
        .collect();
    let got_names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: Vec<String> = want
        .iter()
        .map(|w| w["name"].as_str().unwrap()[strip_prefix.len()..].to_owned())
        .collect();
    assert_eq!(got_names, want_names, "tensor names and order");
    for ((name, t), w) in got.iter().zip(want) {
        check_tensor(name, t, w);
    }
}

fn top_keys(name: &str) -> Vec<String> {
    expected_file(name)["top_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

/// Reads the fixture as a whole-file state dict and compares all of its tensors.
fn check_state_dict_file(name: &str, format: Format) {
    let f = TorchFile::open(fixture(name)).unwrap();
    assert_eq!(f.format(), format, "{name}");
    assert_eq!(
        f.top_level_keys().unwrap(),
        top_keys(name),
        "{name}: top-level keys"
    );
    let sd = load_state_dict(fixture(name), None).unwrap();
    check_tensors(&sd, &expected_file(name), "");
}

#[test]
fn fixtures_come_from_the_pinned_torch() {
    assert!(expected()["torch_version"]
        .as_str()
        .unwrap()
        .starts_with("2.11.0"));
}

#[test]
fn ordered_dict_state_dict() {
    // model.state_dict(): OrderedDict with `_metadata`, the case libtorch's loader rejects.
    check_state_dict_file("state_dict.pt", Format::Zip);
}

#[test]
fn plain_dict() {
    check_state_dict_file("plain_dict.pt", Format::Zip);
}

#[test]
fn legacy_format() {
    check_state_dict_file("legacy.pt", Format::Legacy);
}

#[test]
fn every_dtype() {
    check_state_dict_file("dtypes.pt", Format::Zip);
}

#[test]
fn big_endian_zip_is_swapped() {
    // Same tensors as dtypes.pt, stored big-endian with byteorder "big".
    check_state_dict_file("bigendian.pt", Format::Zip);
    let be = load_state_dict(fixture("bigendian.pt"), None).unwrap();
    let le = load_state_dict(fixture("dtypes.pt"), None).unwrap();
    assert_eq!(be, le);
}

#[test]
fn views_transpose_shared_storage_empty_and_scalar() {
    check_state_dict_file("views.pt", Format::Zip);
    let sd = load_state_dict(fixture("views.pt"), None).unwrap();
    let get = |n: &str| &sd.iter().find(|(k, _)| k == n).unwrap().1;
    assert_eq!(
        get("transposed").to_f32_vec(),
        vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
    );
    assert_eq!(get("view_a").to_i64_vec(), vec![2, 3, 4, 5, 6]);
    assert_eq!(
        get("view_b").to_i64_vec(),
        vec![5, 7, 9, 10, 12, 14, 15, 17, 19]
    );
    assert_eq!(get("empty").shape, vec![0, 3]);
    assert!(get("empty").data.is_empty());
    assert_eq!(get("scalar").shape, Vec::<usize>::new());
    assert_eq!(get("scalar").to_f32_vec(), vec![3.25]);
}

#[test]
fn legacy_views() {
    check_state_dict_file("legacy_views.pt", Format::Legacy);
}

#[test]
fn pickle_protocols_4_and_5() {
    for name in ["protocol4.pt", "protocol5.pt"] {
        check_state_dict_file(name, Format::Zip);
        let v = load(fixture(name)).unwrap();
        assert_eq!(v.get("name").and_then(Value::as_str), Some("déjà vu"));
        assert_eq!(v.get("big").and_then(Value::as_i128), Some(1i128 << 70));
        assert_eq!(v.get("neg").and_then(Value::as_int), Some(-123456789012));
        assert_eq!(v.get("pi").and_then(Value::as_f64), Some(3.5));
        assert_eq!(
            v.get("flags"),
            Some(&Value::List(vec![
                Value::Bool(true),
                Value::Bool(false),
                Value::None
            ]))
        );
        assert_eq!(
            v.get("pair"),
            Some(&Value::Tuple(vec![Value::Int(1), Value::Str("b".into())]))
        );
        assert_eq!(v.get("blob"), Some(&Value::Bytes(vec![0, 1, 255])));
    }
}

#[test]
fn training_checkpoint() {
    let name = "checkpoint.pt";
    let want = expected_file(name);
    let mut f = TorchFile::open(fixture(name)).unwrap();
    assert_eq!(f.top_level_keys().unwrap(), top_keys(name));

    // One state dict out of the checkpoint, named as in the model.
    check_tensors(&f.load_state_dict(Some("model")).unwrap(), &want, "model.");
    check_tensors(
        &load_state_dict(fixture(name), Some("ema")).unwrap(),
        &want,
        "ema.",
    );

    // The whole tree: every tensor (model, ema, optimizer moments) flattened with '.'.
    let all = f.load().unwrap();
    let flat = all.clone().into_tensors();
    check_tensors(&flat, &want, "");
    let borrowed: Vec<(String, TensorData)> = all
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.clone()))
        .collect();
    assert_eq!(borrowed, flat);

    assert_eq!(all.get("step"), Some(&Value::Int(7)));
    // optimizer.state_dict(): int-keyed state, param_groups with the hyper-parameters.
    let opt = all.get("opt").unwrap();
    assert!(opt
        .get("state")
        .unwrap()
        .get_int(0)
        .unwrap()
        .get("exp_avg")
        .unwrap()
        .as_tensor()
        .is_some());
    let Value::List(groups) = opt.get("param_groups").unwrap() else {
        panic!("param_groups")
    };
    assert_eq!(
        groups[0].get("lr").and_then(Value::as_f64),
        want["param_groups_lr"].as_f64()
    );
    let params: Vec<i64> = match groups[0].get("params").unwrap() {
        Value::List(p) => p.iter().map(|v| v.as_int().unwrap()).collect(),
        other => panic!("params: {other:?}"),
    };
    let want_params: Vec<i64> = want["param_groups_params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(params, want_params);

    // argparse.Namespace: an opaque object whose attributes are its BUILD state.
    let Value::Object(args) = f.load_entry("args").unwrap() else {
        panic!("args")
    };
    assert_eq!(args.class, "argparse.Namespace");
    let wargs = &want["args"];
    assert_eq!(
        args.attr("model").and_then(Value::as_str),
        wargs["model"].as_str()
    );
    assert_eq!(
        args.attr("image_size").and_then(Value::as_int),
        wargs["image_size"].as_i64()
    );
    assert_eq!(
        args.attr("lr").and_then(Value::as_f64),
        wargs["lr"].as_f64()
    );
    assert_eq!(args.attr("ckpt"), Some(&Value::None));
    assert_eq!(args.attr("use_ema"), Some(&Value::Bool(true)));
    assert_eq!(
        args.attr("betas"),
        Some(&Value::Tuple(vec![Value::Float(0.9), Value::Float(0.999)]))
    );
}

#[test]
fn parameters_sizes_sets_and_shared_tensors() {
    let name = "misc.pt";
    let v = load(fixture(name)).unwrap();
    assert_eq!(v.dict_keys().unwrap(), top_keys(name));
    // Parameter, Parameter with state, int keys and nested dicts all flatten to tensors; the
    // tensor object stored twice in "twice" comes out as two equal tensors.
    let want = expected_file(name);
    let w = |n: &str| {
        want["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap()
            .clone()
    };
    for (n, t) in v.tensors() {
        check_tensor(&n, t, &w(&n));
    }
    assert_eq!(
        v.tensors()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        [
            "param",
            "param_state",
            "nested.a.b",
            "int_keys.0",
            "int_keys.5"
        ]
    );
    let Value::List(twice) = v.get("twice").unwrap() else {
        panic!("twice")
    };
    assert_eq!(twice.len(), 2);
    assert_eq!(twice[0], twice[1]);
    check_tensor("twice", twice[0].as_tensor().unwrap(), &w("twice"));

    assert_eq!(
        v.get("size"),
        Some(&Value::Tuple(vec![Value::Int(2), Value::Int(3)]))
    );
    assert_eq!(v.get("dtype"), Some(&Value::Global("torch.float16".into())));
    assert_eq!(v.get("set"), Some(&Value::Set(vec![Value::Int(3)])));
    let Value::Object(ns) = v.get("ns").unwrap() else {
        panic!("ns")
    };
    assert_eq!(ns.attr("depth"), Some(&Value::Int(2)));
}

#[test]
fn only_the_selected_entry_is_read() {
    // complex.pt holds a complex64 tensor, which this crate does not read; its float neighbour
    // still loads on its own because storages are read per entry.
    let mut f = TorchFile::open(fixture("complex.pt")).unwrap();
    let ok = f.load_entry("ok").unwrap();
    check_tensor(
        "ok",
        ok.as_tensor().unwrap(),
        &expected_file("complex.pt")["tensors"][0],
    );
    match f.load_state_dict(None) {
        Err(Error::UnsupportedDtype { name }) => assert_eq!(name, "torch.ComplexFloatStorage"),
        other => panic!("{other:?}"),
    }
}

// ---- errors ----

fn tmp_copy(name: &str, keep: impl FnOnce(usize) -> usize, tag: &str) -> PathBuf {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let n = keep(bytes.len());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{name}"));
    std::fs::write(&out, &bytes[..n]).unwrap();
    out
}

#[test]
fn random_bytes_are_not_a_torch_file() {
    let err = load(fixture("not_torch.bin")).unwrap_err();
    assert!(matches!(err, Error::NotATorchFile { .. }), "{err}");
    assert!(err.to_string().contains("not a PyTorch file"), "{err}");
    // A text file and an empty file too.
    let txt = Path::new(env!("CARGO_TARGET_TMPDIR")).join("notes.txt");
    std::fs::write(&txt, "hello\n").unwrap();
    assert!(matches!(load(&txt), Err(Error::NotATorchFile { .. })));
    let empty = tmp_copy("state_dict.pt", |_| 0, "empty");
    assert!(matches!(load(&empty), Err(Error::NotATorchFile { .. })));
}

#[test]
fn truncated_zip() {
    for cut in [2, 3] {
        let p = tmp_copy(
            "state_dict.pt",
            |n| n * (cut - 1) / cut,
            &format!("cut{cut}"),
        );
        let err = load(&p).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[test]
fn truncated_legacy() {
    // Cut inside the storage data (the tail of the file) and inside the object pickle.
    let p = tmp_copy("legacy.pt", |n| n - 10, "tail");
    let err = load(&p).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
    let p = tmp_copy("legacy.pt", |_| 400, "pickle");
    let err = load(&p).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
    // Only the state dict's tensors are read, but the cut is still seen.
    let p = tmp_copy("legacy.pt", |n| n - 1, "last");
    assert!(matches!(
        load_state_dict(&p, None),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn missing_key_lists_available_keys() {
    let err = load_state_dict(fixture("checkpoint.pt"), Some("ema_model")).unwrap_err();
    match &err {
        Error::MissingKey { key, available } => {
            assert_eq!(key, "ema_model");
            assert_eq!(available, &top_keys("checkpoint.pt"));
        }
        other => panic!("{other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("ema_model") && msg.contains("\"ema\"") && msg.contains("\"opt\""),
        "{msg}"
    );
}

#[test]
fn non_dict_selection() {
    let err = load_state_dict(fixture("checkpoint.pt"), Some("step")).unwrap_err();
    assert!(
        matches!(err, Error::NotADict { ref found } if found == "int"),
        "{err}"
    );
}

#[test]
fn missing_storage_record() {
    // The pickle is intact (keys are listed) but data/0 was removed from the archive.
    let f = TorchFile::open(fixture("missing_storage.pt")).unwrap();
    assert_eq!(f.top_level_keys().unwrap(), top_keys("plain_dict.pt"));
    let err = load(fixture("missing_storage.pt")).unwrap_err();
    match &err {
        Error::MissingStorage { record, .. } => assert!(record.ends_with("data/0"), "{record}"),
        other => panic!("{other}"),
    }
}

/// This crate's folder, read when the test runs: the shared build cache may hold a test
/// binary compiled in another checkout (CI's clone), whose compile-time path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
