#!/usr/bin/env bash
# End-to-end test of ditbench's Slurm launcher against a real Slurm (start one with
# scripts/slurm/start.sh). Exit code 0 only when every check passed.
#
# 1. Without sbatch on PATH, `sweep run --launcher slurm` fails naming sbatch.
# 2. A two-run sweep (sweeps/smoke.toml made longer: STEPS steps, a checkpoint every 20)
#    is submitted as one array job. Once a task is RUNNING and has logged steps, it is
#    stopped the two ways Slurm stops a task:
#    task 0: `scontrol requeue` (SIGTERM; Slurm requeues the task itself);
#    task 1: `scancel --batch --signal=USR1`, what `--signal=B:USR1@N` sends before the
#            time limit (the sbatch script then requeues its own task).
#    Each run checkpoints, marks itself preempted, exits 75; the requeued task waits
#    (Reason=BeginTime) and is released with `scontrol update StartTime=now`.
#    Checks: `sweep status` showed the Slurm task state; both runs finished at STEPS
#    with a finite loss, attempt >= 2, events running → preempted → running → finished,
#    and resumed from the very step they were preempted at (their Slurm logs).
# 3. `sweep cancel` on a second sweep: it returns once the tasks are gone, they do not
#    come back (a cancelled task is not requeued), and both runs are cancelled.
# 4. `launcher.gpus_per_run = 2`: one run trained by two srun tasks (Gloo) to the end.
#
# Env: DITBENCH_BIN (default ~/.cache/ditbench/target/debug/ditbench),
#      SLURM_TEST_TIMEOUT_S (default 300), KEEP=1 keeps the temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${DITBENCH_BIN:-$HOME/.cache/ditbench/target/debug/ditbench}
TIMEOUT_S=${SLURM_TEST_TIMEOUT_S:-300}
STEPS=2000         # 50-100 steps/s per run on a 2-core machine: 20-40 s, time to stop both mid-run
STOP_AFTER=40      # stop a task once its run logged this step: past 2 checkpoints

fail() { echo "slurm/test.sh: FAIL: $*" >&2; exit 1; }
say() { echo "slurm/test.sh: $*" >&2; }
[ -x "$BIN" ] || fail "ditbench binary $BIN not found or not executable (build it: cargo build --workspace --bins, or set DITBENCH_BIN)"
for t in sbatch squeue scontrol scancel sinfo jq; do
    command -v $t >/dev/null || fail "$t not on PATH (start Slurm with scripts/slurm/start.sh; jq reads the JSON)"
done
sinfo -h >/dev/null 2>&1 || fail "sinfo cannot reach slurmctld (start Slurm with scripts/slurm/start.sh)"

T=$(mktemp -d /tmp/ditbench-slurm-test.XXXXXX)
S=$T/store
SPEC=$T/slurm-e2e.toml
JOBS=
cleanup() {
    # shellcheck disable=SC2086
    [ -n "$JOBS" ] && scancel $JOBS 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then say "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
T0=$(date +%s)
deadline=$((T0 + TIMEOUT_S))
check_time() { [ "$(date +%s)" -lt $deadline ] || fail "timed out (${TIMEOUT_S}s) $*"; }
queue() { squeue -h -r -j "$1" -o '%i %T %r' 2>/dev/null | tr '\n' ';'; }

# The smoke sweep, longer. Both runs fit a 2-core node at once (cpus_per_task = 1); on
# one core task 1 waits for task 0, which the sequential checks below allow.
sed -e 's/^name = .*/name = "slurm-e2e"/' \
    -e "s/^steps = .*/steps = $STEPS/" \
    -e 's/^log_every = .*/log_every = 10/' \
    -e 's/^ckpt_every = .*/ckpt_every = 20/' \
    "$ROOT/sweeps/smoke.toml" > "$SPEC"
grep -q "^steps = $STEPS" "$SPEC" && grep -q '^ckpt_every = 20' "$SPEC" && grep -q '^\[launcher.slurm\]' "$SPEC" \
    || fail "could not derive the spec from sweeps/smoke.toml (its keys changed?)"

# ---- 1. bad input: no sbatch on PATH → non-zero exit, a message naming sbatch
mkdir -p "$T/emptybin"
set +e
ERR=$(PATH=$T/emptybin "$BIN" --store "$T/store-nosbatch" sweep run "$SPEC" --launcher slurm 2>&1 >/dev/null)
RC=$?
set -e
[ $RC -ne 0 ] || fail "sweep run --launcher slurm without sbatch on PATH exited 0"
grep -q "^error: .*sbatch" <<<"$ERR" || fail "the error without sbatch does not name sbatch: $ERR"
say "ok: without sbatch: exit $RC: $(grep '^error' <<<"$ERR")"

# ---- 2. submit, stop each task mid-run, let it resume
OUT=$("$BIN" --store "$S" sweep run "$SPEC" --launcher slurm 2>/dev/null) || fail "sweep run --launcher slurm failed: $OUT"
JOB=$(sed -n 's/^submitted array job \([0-9]\+\) .*/\1/p' <<<"$OUT")
[ -n "$JOB" ] || fail "no job id in: $OUT"
JOBS=$JOB
say "submitted array job $JOB"
JOBS_JSON=$S/slurm-e2e/slurm/jobs.json
[ "$(jq -r '.[0].job_id' "$JOBS_JSON")" = "$JOB" ] || fail "$JOBS_JSON does not record job $JOB"
[ "$(jq '.[0].runs | length' "$JOBS_JSON")" = 2 ] || fail "$JOBS_JSON does not list 2 runs"
RUN0=$(jq -r '.[0].runs[0]' "$JOBS_JSON")
RUN1=$(jq -r '.[0].runs[1]' "$JOBS_JSON")
status_json() { "$BIN" --store "$S" sweep status "$1" --json; }

# Waits until task IDX is RUNNING and its run logged step >= STOP_AFTER, reading one
# `sweep status` table per poll (a debug binary starts slowly on a busy machine), whose
# rows read "RUN  running [JOB_IDX RUNNING]  ATTEMPT  STEP/STEPS  LOSS …".
# That the table shows the Slurm state is itself one of the checks.
wait_running() {  # idx run
    local txt line step
    while :; do
        check_time "waiting for task ${JOB}_$1 to run past step $STOP_AFTER; queue: $(queue "$JOB")"
        txt=$("$BIN" --store "$S" sweep status "$SPEC")
        line=$(grep "^$2 " <<<"$txt" || true)
        if grep -q "running \[${JOB}_$1 RUNNING\]" <<<"$line"; then
            step=$(grep -o "[0-9]\+/$STEPS" <<<"$line" | cut -d/ -f1 || true)
            if [ -n "$step" ] && [ "$step" -ge $STOP_AFTER ]; then
                [ "$step" -lt $((STEPS - 100)) ] || fail "run $2 was at step $step/$STEPS before it could be stopped: raise STEPS in $0"
                say "task ${JOB}_$1 RUNNING, run $2 at step $step"
                return
            fi
        fi
        sleep 0.3
    done
}
# A requeued task waits in PENDING (Reason=BeginTime); release it. Not at once: slurmd
# refuses to launch a job it killed under a second ago ("Job N already killed, do not
# launch batch job") and the task then fails instead of running (seen after the
# script's own requeue). Slurm's own BeginTime hold is far longer than this.
release() {  # idx
    local st
    while :; do
        check_time "waiting for task ${JOB}_$1 to be requeued; queue: $(queue "$JOB")"
        st=$(squeue -h -j "${JOB}_$1" -o %T 2>/dev/null || true)
        case "$st" in
            PENDING) sleep 3; scontrol update jobid="${JOB}_$1" StartTime=now && break ;;
            "") fail "task ${JOB}_$1 left the queue instead of being requeued (see $S/slurm-e2e/slurm/${JOB}_$1.out)" ;;
        esac
        sleep 0.2
    done
    say "released ${JOB}_$1"
}

# Both stopped before either is released: task 1 cannot run to its end meanwhile, and on
# a one-core node it gets the core while task 0 waits.
wait_running 0 "$RUN0"
scontrol requeue "${JOB}_0" || fail "scontrol requeue ${JOB}_0 failed"
wait_running 1 "$RUN1"
scancel --batch --signal=USR1 "${JOB}_1" || fail "scancel --batch --signal=USR1 ${JOB}_1 failed"
release 0
release 1

while :; do
    check_time "waiting for the runs to end: $(status_json "$SPEC" | jq -c '[.[] | {id, status, step}]'); queue: $(queue "$JOB")"
    J=$(status_json "$SPEC")
    ended=$(jq '[.[] | select(.status == "finished" or .status == "failed" or .status == "cancelled")] | length' <<<"$J")
    [ "$ended" = 2 ] && [ -z "$(queue "$JOB")" ] && break
    sleep 1
done
ELAPSED=$(( $(date +%s) - T0 ))

for idx in 0 1; do
    run=$(jq -r ".[0].runs[$idx]" "$JOBS_JSON")
    row=$(jq -c --arg r "$run" '.[] | select(.id == $r)' <<<"$J")
    [ "$(jq -r .status <<<"$row")" = finished ] || fail "run $run is not finished: $row"
    [ "$(jq -r .step <<<"$row")" = $STEPS ] || fail "run $run stopped at step $(jq -r .step <<<"$row"), not $STEPS"
    # ditbench writes a non-finite float as null; jq has no NaN/inf literals.
    jq -e '.loss | type == "number" and . == . and . < 1e30 and . > -1e30' <<<"$row" >/dev/null \
        || fail "run $run has a non-finite final loss: $row"
    [ "$(jq -r .attempt <<<"$row")" -ge 2 ] || fail "stopped run $run has attempt $(jq -r .attempt <<<"$row") (want >= 2)"

    EV=$("$BIN" --store "$S" runs query "SELECT status, attempt FROM events WHERE run_id = '$run' ORDER BY time" --json)
    SEQ=$(jq -r '[.[].status] | join(" ")' <<<"$EV")
    grep -Eq '(^| )running( [a-z]+)* preempted( [a-z]+)* running( [a-z]+)* finished$' <<<"$SEQ" \
        || fail "events of $run are '$SEQ'; want running … preempted … running … finished"

    # The task's log keeps both attempts (--open-mode=append): preempted at step P, the
    # second attempt (SLURM_RESTART_COUNT=1) resumed from the checkpoint at P.
    LOG=$S/slurm-e2e/slurm/${JOB}_${idx}.out
    [ -f "$LOG" ] || fail "no Slurm output file $LOG"
    P=$(sed -n "s/^run $run preempted at step \([0-9]\+\) .*/\1/p" "$LOG" | head -1)
    [ -n "$P" ] || fail "$LOG has no 'run $run preempted at step' line:
$(grep -v '^step' "$LOG")"
    grep -q "resumed from .* at step $P\$" "$LOG" || fail "$LOG: preempted at step $P but no 'resumed from … at step $P':
$(grep -v '^step' "$LOG")"
    grep -q "restart 1 on" "$LOG" || fail "$LOG: no line showing SLURM_RESTART_COUNT=1"
    say "ok: task ${JOB}_$idx: run $run events '$SEQ', preempted and resumed at step $P, finished at $STEPS"
done

# ---- 3. sweep cancel
CSPEC=$T/slurm-e2e-cancel.toml
sed -e 's/^name = .*/name = "slurm-e2e-cancel"/' -e 's/^steps = .*/steps = 100000/' "$SPEC" > "$CSPEC"
OUT=$("$BIN" --store "$S" sweep run "$CSPEC" --launcher slurm 2>/dev/null) || fail "sweep run (cancel part) failed: $OUT"
CJOB=$(sed -n 's/^submitted array job \([0-9]\+\) .*/\1/p' <<<"$OUT")
[ -n "$CJOB" ] || fail "no job id in: $OUT"
JOBS="$JOB $CJOB"
# At least one run training (on one core the other task may still be pending).
while :; do
    check_time "cancel part: no task of $CJOB running with steps logged; queue: $(queue "$CJOB")"
    n=$(status_json "$CSPEC" | jq '[.[] | select(.status == "running" and (.step // 0) >= 20)] | length')
    [ "$n" -ge 1 ] && break
    sleep 0.5
done
"$BIN" --store "$S" sweep cancel "$CSPEC" >/dev/null 2>&1 || fail "sweep cancel failed"
[ -z "$(queue "$CJOB")" ] || fail "sweep cancel returned with tasks of $CJOB still queued: $(queue "$CJOB")"
sleep 3
[ -z "$(queue "$CJOB")" ] || fail "tasks of $CJOB came back after sweep cancel: $(queue "$CJOB")"
CJ=$(status_json "$CSPEC")
[ "$(jq '[.[] | select(.status == "cancelled")] | length' <<<"$CJ")" = 2 ] \
    || fail "after sweep cancel the runs are not all cancelled: $(jq -c '[.[] | {id, status}]' <<<"$CJ")"
say "ok: sweep cancel stopped job $CJOB for good and marked both runs cancelled"

# ---- 4. a data-parallel run: launcher.gpus_per_run = 2 → two tasks started by srun,
# which meet through Slurm's variables (Gloo on this CPU node) and train one run
DSPEC=$T/slurm-e2e-ranks.toml
sed -e 's/^name = .*/name = "slurm-e2e-ranks"/' -e 's/^steps = .*/steps = 40/' \
    -e 's/^size = .*/size = ["S"]/' -e 's/^retries = .*/retries = 0\ngpus_per_run = 2/' "$SPEC" > "$DSPEC"
grep -q '^gpus_per_run = 2' "$DSPEC" || fail "could not derive the data-parallel spec"
OUT=$("$BIN" --store "$S" sweep run "$DSPEC" --launcher slurm 2>/dev/null) || fail "sweep run (ranks part) failed: $OUT"
DJOB=$(sed -n 's/^submitted array job \([0-9]\+\) .*/\1/p' <<<"$OUT")
[ -n "$DJOB" ] || fail "no job id in: $OUT"
JOBS="$JOB $CJOB $DJOB"
grep -q '^#SBATCH --ntasks=2$' "$S"/slurm-e2e-ranks/slurm/*.sbatch || fail "the script does not ask for 2 tasks"
while [ -n "$(queue "$DJOB")" ]; do
    check_time "ranks part: job $DJOB still queued: $(queue "$DJOB")"
    sleep 0.5
done
DJ=$(status_json "$DSPEC")
[ "$(jq -r '.[0].status' <<<"$DJ")" = finished ] \
    || fail "the 2-rank run did not finish: $(jq -c . <<<"$DJ"); log: $(cat "$S"/slurm-e2e-ranks/slurm/*.out)"
grep -q "× 2 ranks (Gloo)" "$S"/slurm-e2e-ranks/*/log.txt || fail "the run's log does not show 2 ranks: $(cat "$S"/slurm-e2e-ranks/*/log.txt)"
say "ok: job $DJOB trained one run on 2 srun tasks (Gloo) to the end"

say "PASS in $(( $(date +%s) - T0 ))s (requeue part ${ELAPSED}s; jobs $JOBS)"
