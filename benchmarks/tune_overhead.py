"""Tune/Train harness overhead of a search, measured on this machine.

Runs one search (default: tune_spaces/quickstart.yaml, i.e. `make demo`) on a
fresh local Ray and compares:

- wall_s: the driver's wall time, Ray start-up to outcome written;
- train_s: the sum over trials of their training time, i.e. the seconds spent
  in training steps and FID evaluations (sum of epoch_seconds + eval_seconds
  of every epoch, from each trial's metrics.jsonl);
- slots: trials running at once (the search's concurrency).

overhead = wall_s * slots / train_s - 1: the share of the cluster's trial
slots not spent training (Ray/Tune/Train start-up, per-trial worker start-up,
data loading, validation, checkpoints and grids, idle slots). Target <= 0.15 at
the quickstart scale. Also: trials per hour, and each trial's Tune-side wall
time vs its training time (the per-trial harness cost).

Usage: python benchmarks/tune_overhead.py [--space FILE] [--num-samples N] [--set k=v ...]
Writes benchmarks/results/tune_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from _results import write_result  # benchmarks/ is on sys.path when a script runs

OUT = Path(__file__).parent / "results" / "tune_overhead.json"


def trial_timings(exp_uri: str, trial_id: str) -> dict:
    """Training seconds (from ganray's metrics) and Tune's wall seconds for one trial."""
    from ganray.storage import Storage, join
    from ganray.train import artifacts

    s = Storage()
    rows = artifacts.read_metrics(s, join(exp_uri, "trials", trial_id))
    train = sum((r.get("epoch_seconds") or 0) + (r.get("eval_seconds") or 0) for r in rows)
    tune_wall = start = end = None
    result_json = join(exp_uri, "_tune", trial_id, "result.json")
    if s.exists(result_json):
        lines = [json.loads(x) for x in s.read_text(result_json).splitlines() if x.strip()]
        if lines:
            tune_wall = lines[-1].get("time_total_s")
            # Unix seconds: the trial function's start (first report's end minus its
            # iteration time) and its last report.
            start = lines[0]["timestamp"] - lines[0]["time_this_iter_s"]
            end = lines[-1]["timestamp"]
    return {
        "start": start,
        "end": end,
        "trial_id": trial_id,
        "epochs": len(rows),
        "train_s": round(train, 1),
        "tune_wall_s": round(tune_wall, 1) if tune_wall else None,
        "images_per_s": round(sum(r.get("images_per_s", 0) for r in rows) / max(len(rows), 1), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="tune_spaces/quickstart.yaml")
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--storage", default="", help="where the experiment goes (default: a temp dir)")
    p.add_argument("--name", default="", help="experiment name (default: overhead-<unix time>); must be new")
    p.add_argument("--fifo", action="store_true",
                   help="no early stopping: every trial runs all epochs (isolates the harness from ASHA's "
                        "uneven trial lengths, which leave slots idle at the end)")  # fmt: skip
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()

    import ray

    from ganray.logs import setup_logging
    from ganray.storage import Storage, join
    from ganray.tune.driver import SearchOptions, TrialContext, max_concurrency, run_search
    from ganray.tune.outcome import table
    from ganray.tune.space import load_space

    setup_logging()
    space = load_space(args.space, args.overrides, args.num_samples)
    if args.fifo:
        space.tune.scheduler = {"type": "fifo"}
    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage or tmp
        name = args.name or f"overhead-{int(time.time())}"
        if Storage().exists(join(storage, name)):
            raise SystemExit(f"{join(storage, name)} exists: a re-run would resume it; pick a new --name")
        t0, t0_unix = time.perf_counter(), time.time()
        outcome = run_search(space, SearchOptions(storage_uri=storage, name=name, address="local"))
        wall = time.perf_counter() - t0
        slots = max_concurrency(TrialContext(space, outcome.experiment_uri), ray.cluster_resources())
        cpus = ray.cluster_resources().get("CPU", 0)
        trials = [trial_timings(outcome.experiment_uri, t.trial_id) for t in outcome.trials]
        print(table(outcome))
        ray.shutdown()
    train = sum(t["train_s"] for t in trials)
    for t in trials:  # seconds since the search started
        for k in ("start", "end"):
            t[k] = round(t[k] - t0_unix, 1) if t[k] is not None else None
    ends = sorted(t["end"] for t in trials if t["end"] is not None)
    best = outcome.best
    result = {
        "benchmark": "tune_overhead",
        "space": args.space,
        "overrides": args.overrides,
        "scheduler": space.tune.scheduler["type"],
        "machine": {
            "cpus": os.cpu_count(),
            "ray_cpus": cpus,
            "platform": platform.machine(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },  # other jobs share the CPU
        "trials": len(trials),
        "statuses": {
            s: sum(t.status == s for t in outcome.trials) for s in {t.status for t in outcome.trials}
        },
        "slots": slots,
        "wall_s": round(wall, 1),
        "train_s": round(train, 1),
        "overhead": round(wall * slots / train - 1, 3) if train else None,
        "overhead_target": 0.15,
        "serial_ratio_wall_over_train": round(wall / train, 3) if train else None,
        "trials_per_hour": round(len(trials) / wall * 3600, 1),
        # Where the slot time went: training, per-trial harness (worker start-up, data
        # loading, validation, checkpoints, grids), and slots without a running trial
        # (Ray/Tune start-up, trial launch latency, the tail after the last trial started).
        "breakdown_s": {
            "train": round(train, 1),
            "per_trial_harness": round(
                sum(t["tune_wall_s"] - t["train_s"] for t in trials if t["tune_wall_s"]), 1
            ),
            "idle_slots": round(wall * slots - sum(t["tune_wall_s"] or 0 for t in trials), 1),
        },
        # Idle slots, split: before the first trial function runs (Ray start-up, first
        # trial launch), and the tail, when fewer trials than slots are left to run.
        "first_trial_start_s": min((t["start"] for t in trials if t["start"] is not None), default=None),
        "tail_s": round(ends[-1] - ends[-slots], 1) if len(ends) >= slots else None,
        "after_last_report_s": round(wall - ends[-1], 1) if ends else None,
        "per_trial": trials,
        "per_trial_harness_s": [
            round(t["tune_wall_s"] - t["train_s"], 1) for t in trials if t["tune_wall_s"]
        ],
        "best": {"trial_id": best.trial_id, "fid": best.best, "epoch": best.best_epoch} if best else None,
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
