//! The runs of the shipped sweeps keep their ids (`ditbench sweep plan sweeps/demo.toml
//! --json` prints them). The expected ids were computed with the code before
//! `model.size` and the typed settings existed, and are hard-coded on purpose: a
//! changed id would make a rerun of a sweep start its runs over instead of resuming
//! them. Never update them to make a test pass.

use std::path::Path;

use ditbench_sweep::SweepSpec;

fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

fn ids(sweep: &str) -> Vec<(String, String)> {
    ids_of(&Path::new(&manifest_dir()).join("../../sweeps").join(format!("{sweep}.toml")))
}

fn ids_of(path: &Path) -> Vec<(String, String)> {
    let spec = SweepSpec::load(path).unwrap();
    let runs = spec.expand().unwrap();
    for r in &runs {
        // Every run of a sweep is a family member and knows its size.
        assert_eq!(r.size(), r.config.model.size);
        assert!(r.size().is_some(), "{}", r.config.model.name);
    }
    runs.into_iter().map(|r| (r.config.run_id, r.config.model.name)).collect()
}

fn pinned(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter().map(|(id, name)| (id.to_string(), name.to_string())).collect()
}

/// The demo spec as it was until issue 15 (16 px, one evaluation per run), kept as a
/// fixture: its ids were pinned by the code before `model.size` and the typed settings.
#[test]
fn the_16px_demo_runs_keep_their_ids() {
    assert_eq!(ids_of(&Path::new(&manifest_dir()).join("tests/fixtures/demo-16px.toml")), pinned(&[
        ("DiT-S-8-d2-w32-h2-f97d499552b2", "DiT-S/8 (d2 w32 h2)"),
        ("DiT-S-4-d2-w32-h2-84a01571db65", "DiT-S/4 (d2 w32 h2)"),
        ("DiT-S-2-d2-w32-h2-1a2557a1bfec", "DiT-S/2 (d2 w32 h2)"),
        ("DiT-B-8-d2-w64-h4-938a3f54657c", "DiT-B/8 (d2 w64 h4)"),
        ("DiT-B-4-d2-w64-h4-c74beebf50f8", "DiT-B/4 (d2 w64 h4)"),
        ("DiT-B-2-d2-w64-h4-1bf2bf24cb4e", "DiT-B/2 (d2 w64 h4)"),
        ("DiT-L-8-d4-w64-h4-3850fcc065c0", "DiT-L/8 (d4 w64 h4)"),
        ("DiT-L-4-d4-w64-h4-29051cd2469b", "DiT-L/4 (d4 w64 h4)"),
        ("DiT-L-2-d4-w64-h4-7bd5d31ec102", "DiT-L/2 (d4 w64 h4)"),
        ("DiT-XL-8-d4-w96-h4-711ba00f1977", "DiT-XL/8 (d4 w96 h4)"),
        ("DiT-XL-4-d4-w96-h4-971abb56d6dd", "DiT-XL/4 (d4 w96 h4)"),
        ("DiT-XL-2-d4-w96-h4-86d8f850fd02", "DiT-XL/2 (d4 w96 h4)"),
    ]));
}

/// The demo since issue 15 (32 px, evaluations along training, a validation loss): its
/// spec changed, so its ids did; pinned when the 16 px fixture above still gave its
/// pinned ids, so they are the same code's ids.
#[test]
fn demo_runs_keep_their_ids() {
    assert_eq!(ids("demo"), pinned(&[
        ("DiT-S-8-d2-w32-h2-980c919576bb", "DiT-S/8 (d2 w32 h2)"),
        ("DiT-S-4-d2-w32-h2-886b238dec18", "DiT-S/4 (d2 w32 h2)"),
        ("DiT-S-2-d2-w32-h2-d968010c8ce0", "DiT-S/2 (d2 w32 h2)"),
        ("DiT-B-8-d2-w64-h4-25591f4b6dc6", "DiT-B/8 (d2 w64 h4)"),
        ("DiT-B-4-d2-w64-h4-05dc51f8693b", "DiT-B/4 (d2 w64 h4)"),
        ("DiT-B-2-d2-w64-h4-2a7af5da6fc8", "DiT-B/2 (d2 w64 h4)"),
        ("DiT-L-8-d4-w64-h4-2422223bcdbc", "DiT-L/8 (d4 w64 h4)"),
        ("DiT-L-4-d4-w64-h4-216d9387dfc1", "DiT-L/4 (d4 w64 h4)"),
        ("DiT-L-2-d4-w64-h4-9e9188f2c16e", "DiT-L/2 (d4 w64 h4)"),
        ("DiT-XL-8-d4-w96-h4-ac5c4b2ded2f", "DiT-XL/8 (d4 w96 h4)"),
        ("DiT-XL-4-d4-w96-h4-95170dbebbc2", "DiT-XL/4 (d4 w96 h4)"),
        ("DiT-XL-2-d4-w96-h4-8eddc2c69b8c", "DiT-XL/2 (d4 w96 h4)"),
    ]));
}

#[test]
fn smoke_runs_keep_their_ids() {
    assert_eq!(ids("smoke"), pinned(&[
        ("DiT-S-4-d1-w16-h2-9ee7c91df1b4", "DiT-S/4 (d1 w16 h2)"),
        ("DiT-B-4-d1-w32-h2-fb637da9660b", "DiT-B/4 (d1 w32 h2)"),
    ]));
}

#[test]
fn table4_runs_keep_their_ids() {
    assert_eq!(ids("dit-table4"), pinned(&[
        ("DiT-S-8-90f5bd9250fd", "DiT-S/8"),
        ("DiT-S-4-97e2dcbf7fb1", "DiT-S/4"),
        ("DiT-S-2-195616a42b7c", "DiT-S/2"),
        ("DiT-B-8-b67620d7a041", "DiT-B/8"),
        ("DiT-B-4-02253e6e7c3f", "DiT-B/4"),
        ("DiT-B-2-f404507f63a8", "DiT-B/2"),
        ("DiT-L-8-14577e976dfa", "DiT-L/8"),
        ("DiT-L-4-45f3c732d16c", "DiT-L/4"),
        ("DiT-L-2-94959ca5d229", "DiT-L/2"),
        ("DiT-XL-8-90d57512a022", "DiT-XL/8"),
        ("DiT-XL-4-f18f42c694d4", "DiT-XL/4"),
        ("DiT-XL-2-6ad16bd052e5", "DiT-XL/2"),
    ]));
}
