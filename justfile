# ditbench: every developer and user command. `just --list` shows them.
#
# Builds share one cache outside the checkout (DITBENCH_CACHE, default ~/.cache/ditbench):
# the Python venv with torch 2.11.0 (linked as ./.venv) and cargo's target folder, so a
# fresh clone (CI) does not rebuild libtorch's C++ shim or reinstall torch.

set shell := ["bash", "-euo", "pipefail", "-c"]

cache := env("DITBENCH_CACHE", env("HOME", "/root") / ".cache/ditbench")
venv := cache / "venv-torch-2.11.0"
export CARGO_TARGET_DIR := env("CARGO_TARGET_DIR", cache / "target")
export LIBTORCH_USE_PYTORCH := "1"
export PATH := justfile_directory() / ".venv/bin:" + env("PATH")
bin := CARGO_TARGET_DIR / "debug/ditbench"

# List the commands.
default:
    @just --list

# Create the venv with torch 2.11.0 (shared, linked as ./.venv) when missing. Idempotent.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{venv}}/bin/python" ] || ! "{{venv}}/bin/python" -c 'import torch, numpy, safetensors; assert torch.__version__.startswith("2.11.0")' 2>/dev/null; then
        echo "setup: creating {{venv}} with torch==2.11.0 (about 1 minute, 4.7 GB)"
        mkdir -p "{{cache}}"
        python3 -m venv "{{venv}}"
        "{{venv}}/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.11.0 numpy safetensors
    fi
    if [ ! -e .venv ]; then ln -s "{{venv}}" .venv; fi
    if [ "$(readlink -f .venv)" != "$(readlink -f "{{venv}}")" ]; then
        echo "setup: ./.venv is not the shared venv {{venv}}; move it away or set DITBENCH_CACHE" >&2; exit 1
    fi

# Build the ditbench binary (one profile: dev, optimised dependencies).
build: setup
    cargo build --locked -p ditbench

# The whole test suite.
test: setup
    cargo test --locked --workspace --no-fail-fast

# The main job on the built-in default: the DiT family table, then a scaled-down DiT
# (S/4, 4 blocks) trained on the built-in dataset at 16 px on CPU (GPU when present), with
# sample grids. Rerunning resumes the same run (its id comes from its config).
demo: build
    {{bin}} doctor
    {{bin}} models
    {{bin}} train --model DiT-S/4 --depth 4 --image-size 16 --steps 300 --batch-size 32 --lr 1e-3 --ema-decay 0.99 --log-every 50 --ckpt-every 100 --sample-every 100 --sweep demo

# Benchmarks (release build), each against its baseline in the same run; results go to
# BENCHMARKS.md with date and machine.
bench: setup
    cargo build --locked --release -p ditbench-train --example train_step_bench
    "$CARGO_TARGET_DIR/release/examples/train_step_bench"
    just bench-store

# The run store against MLflow's SQLite backend (installs mlflow into the venv once).
bench-store: setup
    .venv/bin/python -c 'import mlflow' 2>/dev/null || .venv/bin/python -m pip install --quiet mlflow
    rm -rf "$CARGO_TARGET_DIR/bench" && mkdir -p "$CARGO_TARGET_DIR/bench"
    cargo run --locked --release -p ditbench-track --example log_bench -- --dir "$CARGO_TARGET_DIR/bench/store" --json "$CARGO_TARGET_DIR/bench/log.json"
    cargo run --locked --release -p ditbench-track --example log_bench -- --writers 4 --json "$CARGO_TARGET_DIR/bench/log4.json"
    cargo run --locked -p ditbench-query --example store_bench -- --queries-only --dir "$CARGO_TARGET_DIR/bench/store" --json "$CARGO_TARGET_DIR/bench/query.json"
    .venv/bin/python scripts/bench/mlflow_bench.py --runs 20 --query-runs 1000 --ditbench-json "$CARGO_TARGET_DIR/bench/log.json" --ditbench-json "$CARGO_TARGET_DIR/bench/query.json"

# Regenerate the PyTorch reference fixtures (only when the reference scripts change).
fixtures: setup
    .venv/bin/python scripts/reference/make_fixtures.py
    .venv/bin/python scripts/reference/make_torchfile_fixtures.py

# What CI runs.
ci: test

lint: setup
    cargo clippy --locked --workspace --all-targets -- -D warnings
