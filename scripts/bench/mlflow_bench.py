#!/usr/bin/env python3
"""MLflow side of the run-store benchmark (issue 3, section 5).

Logs the same shape of data as `store_bench` (crates/query/examples/store_bench.rs)
through MLflow's Python client on its SQLite backend, with `log_batch` once per flush
interval, then times the two queries:

* min FID per (model, patch): `mlflow.search_runs` over the experiment, then a pandas
  group-by (FID decreases over training, so the latest value MLflow keeps per run is
  the minimum, the same answer ditbench computes over the evals table);
* the loss curve of one run: `MlflowClient.get_metric_history`.

Logging throughput is measured on --runs runs (a subset: MLflow is slow). The queries
run on a second store with --query-runs runs (default 1000, like ditbench's), each with
its params and FID history; only the run whose curve is read gets a full loss curve,
which does not make MLflow's work smaller (get_metric_history reads one run's rows by
index).

    .venv/bin/python scripts/bench/mlflow_bench.py [--runs 20] [--query-runs 1000]
        [--ditbench-json FILE] [--json FILE]

With --ditbench-json (written by log_bench / store_bench --json; repeat it to merge
both) it prints the comparison as a Markdown table.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

MODELS = [(m, p) for m in ("DiT-S", "DiT-B", "DiT-L", "DiT-XL") for p in (2, 4, 8)]
NAMES = ["loss", "loss_vb", "grad_norm", "lr", "throughput", "mse", "ema_decay", "gpu_mem"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--query-runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--metrics", type=int, default=4)
    ap.add_argument("--flush-every", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--ditbench-json", action="append", default=[],
                    help="JSON written by log_bench / store_bench --json (repeatable; merged)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    try:
        import mlflow
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        sys.exit("mlflow is not installed: .venv/bin/pip install mlflow")
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)

    work = a.dir or tempfile.mkdtemp(prefix="mlflow-bench-")
    os.makedirs(work, exist_ok=True)

    def client_for(name):
        uri = f"sqlite:///{os.path.join(work, name)}.db"
        mlflow.set_tracking_uri(uri)
        c = MlflowClient(tracking_uri=uri)
        exp = c.create_experiment(name, artifact_location=os.path.join(work, name + "-artifacts"))
        return c, exp

    def log_run(c, exp, r, steps, metrics, full_curve=True):
        model, patch = MODELS[r % len(MODELS)]
        run = c.create_run(exp, run_name=f"run-{r:05}")
        rid = run.info.run_id
        c.log_batch(
            rid,
            params=[Param("model", model), Param("patch", str(patch)), Param("lr", "0.0001"),
                    Param("batch", "256"), Param("seed", str(r))],
        )
        batch = []
        for step in range(steps):
            ts = int((1.7e9 + step) * 1000)
            if full_curve:
                for k in range(metrics):
                    batch.append(Metric(NAMES[k], 1.0 / (1.0 + step) + k, ts, step))
            if (step + 1) % a.eval_every == 0:
                batch.append(Metric("fid", 100.0 / (1.0 + step) + (r % 7), ts, step + 1))
            if (step + 1) % a.flush_every == 0 and batch:
                c.log_batch(rid, metrics=batch)
                batch = []
        if batch:
            c.log_batch(rid, metrics=batch)
        c.set_terminated(rid, "FINISHED")
        return rid

    # ------------------------------------------------------------- logging
    c, exp = client_for("logging")
    t0 = time.perf_counter()
    for r in range(a.runs):
        log_run(c, exp, r, a.steps, a.metrics)
    log_s = time.perf_counter() - t0
    points = a.runs * a.steps * a.metrics
    pps = points / log_s
    # What each log_batch commit costs on disk: MLflow leaves SQLite's defaults (rollback
    # journal, synchronous=FULL: fsyncs on every commit). Read it from the live engine.
    import sqlalchemy

    with c._tracking_client.store.engine.connect() as conn:
        mlflow_sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
            conn.execute(sqlalchemy.text("PRAGMA synchronous")).scalar(), "?")
        mlflow_journal = conn.execute(sqlalchemy.text("PRAGMA journal_mode")).scalar()
    print(f"mlflow logging: {a.runs} runs x {a.steps} steps x {a.metrics} metrics, log_batch every "
          f"{a.flush_every} steps: {log_s:.2f} s, {pps:.0f} points/s "
          f"(SQLite journal_mode={mlflow_journal}, synchronous={mlflow_sync})")

    # ------------------------------------------------------------- queries
    qc, qexp = client_for("query")
    t0 = time.perf_counter()
    curve_run = None
    for r in range(a.query_runs):
        rid = log_run(qc, qexp, r, a.steps, a.metrics, full_curve=(r == a.query_runs // 2))
        if r == a.query_runs // 2:
            curve_run = rid
    print(f"mlflow query store: {a.query_runs} runs built in {time.perf_counter() - t0:.1f} s")

    def timed(label, f):
        n = f()
        v = []
        for _ in range(a.reps):
            t = time.perf_counter()
            f()
            v.append(time.perf_counter() - t)
        m = statistics.median(v) * 1e3
        print(f"mlflow query {label}: median {m:.2f} ms over {a.reps} reps ({n} rows)")
        return m

    def min_fid():
        df = mlflow.search_runs(experiment_ids=[qexp], max_results=100000)
        g = df.groupby(["params.model", "params.patch"])["metrics.fid"].min()
        assert len(df) == a.query_runs, len(df)
        return len(g)

    def curve():
        h = qc.get_metric_history(curve_run, "loss")
        assert len(h) == a.steps, len(h)
        return len(h)

    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(work, 'query')}.db")
    q_fid = timed("min FID per (model, patch), search_runs", min_fid)
    q_curve = timed("loss curve of one run, get_metric_history", curve)

    res = {"runs": a.runs, "query_runs": a.query_runs, "steps": a.steps, "metrics": a.metrics,
           "flush_every": a.flush_every, "log_seconds": log_s, "points_per_s": pps,
           "queries_ms": {"min_fid": q_fid, "loss_curve": q_curve}, "mlflow_version": mlflow.__version__}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)

    if a.ditbench_json:
        d, logs = {}, []
        for path in a.ditbench_json:
            with open(path) as f:
                part = json.load(f)
            if "points_per_s" in part:
                logs.append(part)
            d.update({k: v for k, v in part.items() if k != "queries_ms"})
            d.setdefault("queries_ms", {}).update(part.get("queries_ms", {}))
        dq = d["queries_ms"]
        d_fid = dq["min FID per (model, patch), summaries"]
        d_fid_scan = dq["min FID per (model, patch), evals tables"]
        d_curve = dq["loss curve of one run, SQL over metrics"]
        d_curve_api = dq["loss curve of one run, track read_run"]
        print()
        print(f"| measure | ditbench | MLflow {mlflow.__version__} (SQLite) | ratio |")
        print("| --- | --- | --- | --- |")
        for g in logs:
            how = f"{g['writers']} writer(s), durability {g.get('durability', 'Machine')}"
            print(f"| logging, points/s, {how} | {g['points_per_s']:,.0f} ({g['runs']} runs) "
                  f"| {pps:,.0f} ({a.runs} runs, synchronous={mlflow_sync}) | {g['points_per_s'] / pps:,.0f}x |")
        print(f"| min FID per (model, patch), median ms | {d_fid:.1f} (SQL over summaries) | {q_fid:.1f} (search_runs) "
              f"| {q_fid / d_fid:.1f}x faster |")
        print(f"| same, over the full eval history, median ms | {d_fid_scan:.1f} (SQL over evals) | n/a "
              f"(MLflow keeps only the latest value per run) | {q_fid / d_fid_scan:.1f}x faster than search_runs |")
        print(f"| loss curve of one run, median ms | {d_curve:.1f} (SQL over metrics) | {q_curve:.1f} "
              f"(get_metric_history) | {q_curve / d_curve:.1f}x faster |")
        print(f"| loss curve of one run via the library, median ms | {d_curve_api:.2f} (track::read_run) | {q_curve:.1f} "
              f"| {q_curve / d_curve_api:.0f}x faster |")


if __name__ == "__main__":
    main()
