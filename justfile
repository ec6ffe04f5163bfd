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
    # CUDA's crt/ and cccl headers (torch 2.11's own cuda-toolkit pin): ditbench-c10d
    # compiles its NCCL path against them; without them it builds Gloo only.
    if ! ls "{{venv}}"/lib/python3*/site-packages/nvidia/*/include/crt/host_config.h >/dev/null 2>&1; then
        "{{venv}}/bin/python" -m pip install --quiet --disable-pip-version-check "cuda-toolkit[crt,cccl]==13.0.2"
    fi
    # Gloo's headers for ditbench-c10d's c10d bridge (the torch wheel ships none).
    if [ ! -e /usr/include/gloo/context.h ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -qq libgloo-dev >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libgloo-dev)
        else
            echo "setup: install gloo's headers (Debian/Ubuntu: sudo apt-get install libgloo-dev)" >&2; exit 1
        fi
    fi
    # strace for the store test that checks no compute process opens SQLite or locks.
    if ! command -v strace >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -qq strace >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq strace)
        else
            echo "setup: strace is missing (Debian/Ubuntu: sudo apt-get install strace); the store's strace test will skip" >&2
        fi
    fi
    if [ ! -e .venv ]; then ln -s "{{venv}}" .venv; fi
    if [ "$(readlink -f .venv)" != "$(readlink -f "{{venv}}")" ]; then
        echo "setup: ./.venv is not the shared venv {{venv}}; move it away or set DITBENCH_CACHE" >&2; exit 1
    fi

# Build the ditbench binary (one profile: dev, optimised dependencies).
build: setup
    # --workspace, not -p ditbench: Cargo unifies features over the packages selected, and
    # one selection everywhere keeps a single set of artifacts in the shared cache.
    cargo build --locked --workspace --bins

# The whole test suite.
test: setup
    cargo test --locked --workspace --no-fail-fast

# The main job on the built-in default: a sweep over the whole DiT family (S/B/L/XL ×
# patch 8/4/2, scaled down) on the built-in dataset on the CPU (GPU when present), each
# run evaluated by FD in a small classifier's feature space, then the scaling report.
# Rerunning resumes: finished runs are kept, unfinished ones continue from checkpoints.
demo: build
    {{bin}} doctor
    {{bin}} sweep plan sweeps/demo.toml
    {{bin}} sweep run sweeps/demo.toml
    {{bin}} report sweeps/demo.toml --out reports/demo

# The Slurm launcher against a real one-node Slurm on this machine (root; installs
# slurm-wlm and munge with apt when missing). About 40 s. Stop it: bash scripts/slurm/stop.sh
test-slurm: build
    bash scripts/slurm/start.sh && DITBENCH_BIN={{bin}} bash scripts/slurm/test.sh

# Benchmarks (release build), each against its baseline in the same run; results go to
# BENCHMARKS.md with date and machine.
bench: setup
    cargo build --locked --release -p ditbench-train --example train_step_bench --example train_loop_bench
    "$CARGO_TARGET_DIR/release/examples/train_step_bench"
    "$CARGO_TARGET_DIR/release/examples/train_loop_bench"
    just bench-store
    just bench-eval
    just bench-report
    just bench-scaling
    just bench-dist

# Gradient all-reduce over Gloo, 2 local processes, against torch.distributed.
bench-dist: setup
    cargo build --locked --workspace --example allreduce_bench
    "$CARGO_TARGET_DIR/debug/examples/allreduce_bench" --iters 20
    .venv/bin/python scripts/bench/allreduce_torch.py --iters 20

# FID pipeline: Inception features against pytorch-fid (installed into the venv once),
# and the Fréchet distance of two 2048-d statistics against scipy's sqrtm.
bench-eval: setup
    .venv/bin/python -c 'import pytorch_fid' 2>/dev/null || .venv/bin/python -m pip install --quiet pytorch-fid==0.3.0 torchvision==0.26.0
    cargo run --locked -p ditbench-eval --example inception_bench -- --n 64 --size 64 --threads 2
    cargo run --locked -p ditbench-eval --example frechet_bench -- --reps 5

# Report generation for 12 runs × 4,000 steps × 4 metrics.
bench-report: setup
    cargo run --locked -p ditbench-report --example report_bench -- 7

# Scaling-law fits: joint and power forms by variable projection with 400 bootstrap
# replicates over runs, 100 and 500 points.
bench-scaling: setup
    cargo run --locked -p ditbench-scaling --example fit_timing

# The run store against MLflow's SQLite backend (installs mlflow into the venv once).
bench-store: setup
    .venv/bin/python -c 'import mlflow' 2>/dev/null || .venv/bin/python -m pip install --quiet mlflow
    rm -rf "$CARGO_TARGET_DIR/bench" && mkdir -p "$CARGO_TARGET_DIR/bench"
    cargo run --locked --release -p ditbench-track --example log_bench -- --dir "$CARGO_TARGET_DIR/bench/store" --json "$CARGO_TARGET_DIR/bench/log.json"
    cargo run --locked --release -p ditbench-track --example log_bench -- --writers 4 --json "$CARGO_TARGET_DIR/bench/log4.json"
    cargo run --locked --release -p ditbench-track --example log_bench -- --durability machine --json "$CARGO_TARGET_DIR/bench/log-machine.json"
    cargo run --locked -p ditbench-query --example store_bench -- --queries-only --dir "$CARGO_TARGET_DIR/bench/store" --json "$CARGO_TARGET_DIR/bench/query.json"
    .venv/bin/python scripts/bench/mlflow_bench.py --runs 20 --query-runs 1000 --ditbench-json "$CARGO_TARGET_DIR/bench/log.json" --ditbench-json "$CARGO_TARGET_DIR/bench/log4.json" --ditbench-json "$CARGO_TARGET_DIR/bench/log-machine.json" --ditbench-json "$CARGO_TARGET_DIR/bench/query.json"

# The binary the GPU machine runs (it has no Rust): release, without polars (no `runs`
# or `report` commands), stripped, into gpu-bin/ (ignored by git; carried to the machine).
gpu-build: setup
    cargo build --locked --release -p ditbench --no-default-features
    cargo build --locked --release -p ditbench-train --example bf16_sampling_fd
    mkdir -p gpu-bin
    cp "$CARGO_TARGET_DIR/release/ditbench" "$CARGO_TARGET_DIR/release/examples/bf16_sampling_fd" gpu-bin/
    strip gpu-bin/ditbench gpu-bin/bf16_sampling_fd
    ls -l gpu-bin

# GPU numbers (issue 4 §3, issue 8 §4) on a machine with one NVIDIA GPU, from
# gpu-bin/ditbench (`just gpu-build`) and the machine's own torch; prints a table (and
# writes $OUT/gpu-check.md). Without just: `bash scripts/gpu/check.sh gpu-bin/ditbench`.
# `GPU_CHECK_DRY=1` runs it at toy sizes on the CPU.
gpu-check:
    bash scripts/gpu/check.sh gpu-bin/ditbench

# Regenerate the PyTorch reference fixtures (only when the reference scripts change).
fixtures: setup
    .venv/bin/python scripts/reference/make_fixtures.py
    .venv/bin/python scripts/reference/make_torchfile_fixtures.py

# What CI runs.
ci: test

lint: setup
    cargo clippy --locked --workspace --all-targets -- -D warnings
