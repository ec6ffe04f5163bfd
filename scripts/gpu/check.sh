#!/usr/bin/env bash
# `just gpu-check`: ditbench's GPU numbers in one run on a machine with one NVIDIA GPU
# (issue 4 §3, issue 8 §4), well under 10 minutes on an H100/H200. Needs only the
# stripped, polars-free ditbench binary built elsewhere (`just gpu-build`) and a Python
# with torch 2.11 and numpy; no network, no Rust.
#
#   bash scripts/gpu/check.sh [BINARY]          (default gpu-bin/ditbench)
#   GPU_CHECK_DRY=1 bash scripts/gpu/check.sh   (tiny sizes on the CPU: checks the script)
#
# Prints a table and writes it to $OUT/gpu-check.md when $OUT is set:
#  1. the bf16 matmul rate of an 8192³ product (PyTorch), the yardstick;
#  2. DiT-XL/2 on 256-px latents (32×32×4), global batch 256 in micro-batches:
#     (a) ditbench bf16 + SDPA, (b) the official recipe in PyTorch fp32 + TF32:
#     images/s, TFLOP/s, MFU, peak memory; targets (a) ≥ 2× (b) and ≥ 45% of (1);
#  3. the same ditbench run with activation checkpointing: peak memory saved;
#  4. DiT-S/2, 200 steps: mean loss of bf16 against fp32 (target within 2%);
#  5. the NCCL group at world size 1 with the all-reduce path in training: step time
#     against no process group;
#  6. bf16 against fp32 sampling: FD shift of the demo's XL member against the noise
#     floor (gpu-bin/bf16_sampling_fd, built by `just gpu-build` too).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="$(readlink -f "${1:-gpu-bin/ditbench}")"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
DRY="${GPU_CHECK_DRY:-0}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$BIN" ] || { echo "gpu-check: no ditbench binary at $BIN (build it with: just gpu-build)" >&2; exit 2; }

if [ "$DRY" = 1 ]; then
    DEV=cpu; XL=S/8; XL_DEPTH="--depth 1"; BATCH=8; MICRO=4; STEPS=4; LOG=2; S2=S/8; S2_STEPS=20; S2_BATCH=8; LAT=8; COUNT=64
else
    DEV=cuda; XL=XL/2; XL_DEPTH=""; BATCH=256; MICRO=64; STEPS=16; LOG=8; S2=S/2; S2_STEPS=200; S2_BATCH=64; LAT=32; COUNT=1024
fi

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
DOCTOR="$("$BIN" doctor)"; echo "$DOCTOR"

# Synthetic latents (throughput does not depend on their content); the small
# random-weight VAE of the tests decodes the end-of-run grids.
"$PY" scripts/gpu/make_latents.py "$WORK/latents" --count "$COUNT" --size "$LAT"
sed -i "s#\"vae\": \"none (synthetic)\"#\"vae\": \"$PWD/crates/model/tests/fixtures/vae\"#" "$WORK/latents/latents.json"

# One ad-hoc ditbench run; prints the run folder.
train() {
    local store="$WORK/store-$1"; shift
    "$BIN" --store "$store" train --data "$WORK/latents" --device "$DEV" --sweep gpucheck "$@" > "$store.out" 2>&1 \
        || { cat "$store.out" >&2; echo "gpu-check: ditbench train failed" >&2; exit 1; }
    dirname "$(find "$store" -name log.txt | head -1)"
}
# Fields of the last step line of a run's log.txt as JSON (img/s, TFLOP/s, MFU, memory)
# plus the mean of every logged loss.
stats() {
    "$PY" - "$1/log.txt" <<'EOF'
import json, re, sys
lines = [l for l in open(sys.argv[1]) if " step " in l and " img/s " in l]
last = lines[-1]
num = lambda pat: (lambda m: float(m.group(1)) if m else None)(re.search(pat, last))
losses = [float(re.search(r"loss ([0-9.eE+-]+)", l).group(1)) for l in lines]
print(json.dumps({"images_per_s": num(r"([0-9.]+) img/s"), "tflops": num(r"([0-9.]+) TFLOP/s"),
                  "mfu": num(r"MFU ([0-9.]+)%"), "mem_gib": num(r"(?:gpu_mem_peak_gib|rss_peak_gib) ([0-9.]+)"),
                  "mean_loss": sum(losses) / len(losses), "cuda": "on cuda" in open(sys.argv[1]).read()}))
EOF
}

echo "== 1. bf16 matmul rate"
if [ "$DRY" = 1 ]; then MATMUL=1.0; else MATMUL="$("$PY" scripts/gpu/matmul_peak.py)"; fi
echo "$MATMUL TFLOP/s"

echo "== 2a. ditbench $XL bf16, batch $BATCH (micro $MICRO)"
RUN_A="$(train a --model "$XL" $XL_DEPTH --batch-size "$BATCH" --micro-batch "$MICRO" --steps "$STEPS" --log-every "$LOG" --precision bf16)"
A="$(stats "$RUN_A")"; echo "$A"
echo "== 2b. PyTorch official recipe fp32+TF32"
if [ "$DRY" = 1 ]; then B='{"images_per_s": 1.0, "tflops": 0.0, "peak_mem_gib": 0.0}'
else B="$("$PY" scripts/gpu/reference_train.py --model XL/2 --batch 256 --micro 32 --warmup 2 --steps 6)"; fi
echo "$B"
echo "== 3. ditbench $XL bf16 with activation checkpointing"
RUN_C="$(train c --model "$XL" $XL_DEPTH --batch-size "$BATCH" --micro-batch "$MICRO" --steps "$STEPS" --log-every "$LOG" --precision bf16 --activation-checkpointing)"
C="$(stats "$RUN_C")"; echo "$C"
echo "== 4. $S2 bf16 vs fp32, $S2_STEPS steps"
RUN_BF="$(train bf --model "$S2" --batch-size "$S2_BATCH" --steps "$S2_STEPS" --log-every 10 --precision bf16 --seed 1)"
RUN_FP="$(train fp --model "$S2" --batch-size "$S2_BATCH" --steps "$S2_STEPS" --log-every 10 --precision fp32 --seed 1)"
BF="$(stats "$RUN_BF")"; FP="$(stats "$RUN_FP")"; echo "bf16 $BF"; echo "fp32 $FP"
echo "== 5. process group of one (all-reduce path) vs none, $S2 bf16"
RUN_ND="$(train nd --model "$S2" --batch-size "$S2_BATCH" --steps 100 --log-every 50 --precision bf16 --seed 2)"
RUN_DD="$(DITBENCH_DIST=1 RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 \
    train dd --model "$S2" --batch-size "$S2_BATCH" --steps 100 --log-every 50 --precision bf16 --seed 2)"
ND="$(stats "$RUN_ND")"; DD="$(stats "$RUN_DD")"; echo "none $ND"; echo "group $DD"
grep -h "ranks" "$RUN_DD/log.txt" | head -1 || true
echo "== 6. bf16 vs fp32 sampling: FD shift against the sampling noise floor"
FD_BIN="$(dirname "$BIN")/bf16_sampling_fd"
if [ -x "$FD_BIN" ]; then
    if [ "$DRY" = 1 ]; then FD_OUT="$("$FD_BIN" 20 cpu)"; else FD_OUT="$("$FD_BIN" 1000 cuda)"; fi
    echo "$FD_OUT"
else
    FD_OUT="(not run: $FD_BIN missing)"; echo "$FD_OUT"
fi

"$PY" - "$MATMUL" "$A" "$B" "$C" "$BF" "$FP" "$ND" "$DD" "$DRY" "$FD_OUT" <<'EOF' | tee "${OUT:-$WORK}/gpu-check.md"
import json, sys
matmul = float(sys.argv[1])
a, b, c, bf, fp, nd, dd = (json.loads(x) for x in sys.argv[2:9])
dry = sys.argv[9] == "1"
fd_lines = [l for l in sys.argv[10].splitlines() if l.startswith("FD_builtin")]
fd = lambda i: fd_lines[i].split(":")[1].split("(")[0].strip() if len(fd_lines) > i else "not run"
ok = lambda cond: "met" if cond else "MISSED"
rows = [
    ("bf16 matmul 8192³ (PyTorch)", f"{matmul:.1f} TFLOP/s", "", ""),
    ("(a) ditbench XL/2 bf16 + SDPA", f"{a['images_per_s']:.1f} img/s, {a['tflops']:.1f} TFLOP/s, MFU {a['mfu']}%, peak {a['mem_gib']} GiB", "", ""),
    ("(b) PyTorch fp32 + TF32 (official recipe)", f"{b['images_per_s']:.1f} img/s, {b['tflops']:.1f} TFLOP/s, peak {b['peak_mem_gib']:.1f} GiB", "", ""),
    ("(a) / (b) images/s", f"{a['images_per_s'] / b['images_per_s']:.2f}x", "≥ 2x", ok(a['images_per_s'] >= 2 * b['images_per_s'])),
    ("(a) TFLOP/s / bf16 matmul rate", f"{100 * a['tflops'] / matmul:.1f}%", "≥ 45%", ok(a['tflops'] >= 0.45 * matmul)),
    ("activation checkpointing: peak memory", f"{c['mem_gib']} GiB vs {a['mem_gib']} GiB, {c['images_per_s']:.1f} img/s", "", ""),
    ("S/2 200 steps mean loss bf16 / fp32", f"{bf['mean_loss']:.5f} / {fp['mean_loss']:.5f} ({100 * abs(bf['mean_loss'] / fp['mean_loss'] - 1):.2f}%)", "within 2%", ok(abs(bf['mean_loss'] / fp['mean_loss'] - 1) < 0.02)),
    ("NCCL group of 1 vs none, step time", f"{nd['images_per_s'] / dd['images_per_s']:.3f}x ({dd['images_per_s']:.0f} vs {nd['images_per_s']:.0f} img/s)", "", ""),
    ("sampling FD: fp32 / fp32 other noise / bf16", f"{fd(0)} / {fd(1)} / {fd(2)}", "bf16 shift within the noise floor", ""),
    ("CUDA used by every ditbench run", str(all(r['cuda'] for r in (a, c, bf, fp, nd, dd))), "True", ok(dry or all(r['cuda'] for r in (a, c, bf, fp, nd, dd)))),
]
print("| measure | value | target | |\n| --- | --- | --- | --- |")
for r in rows:
    print("| " + " | ".join(r) + " |")
if dry:
    print("\n(dry run on the CPU: the numbers check the script, not a GPU)")
EOF
