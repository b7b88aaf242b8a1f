"""``python -m ganray.tune``: run or resume a hyperparameter search described by a space file.

    python -m ganray.tune --space tune_spaces/quickstart.yaml --storage s3://bucket/searches

Re-running the same command (or adding --resume) continues an interrupted
experiment (STORAGE/NAME, NAME defaulting to the space file's name) with its
finished trials and the searcher's history kept.

Exit status:
  0  the search ended and at least one trial was evaluated (best.json written)
  1  the search ended but no trial produced the metric (every trial errored)
  2  the search could not start: bad option, space or config, storage not
     writable (missing bucket, credentials), another search holds the
     experiment, training data not readable, Ray cluster not reachable;
     nothing is left behind in a new experiment
  3  interrupted (Ctrl-C) before every trial ended; best.json names the best
     trial finished so far, and re-running the same command resumes
"""

from __future__ import annotations

import argparse
import logging
import sys

from ganray.config import ConfigError, add_set_argument
from ganray.logs import setup_logging

log = logging.getLogger("ganray.tune")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ganray.tune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--space", required=True, help="search-space YAML file (see tune_spaces/)")
    p.add_argument(
        "--storage", required=True, help="where experiments go: a local path or s3://bucket/prefix"
    )
    p.add_argument(
        "--name", default="", help="experiment name under --storage (default: the space file's name)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="require an existing experiment to resume (re-running without it resumes too)",
    )
    p.add_argument(
        "--num-samples", type=_count(1), default=None, help="number of trials (overrides tune.num_samples)"
    )
    p.add_argument(
        "--max-concurrent",
        type=_count(0),
        default=0,
        help="trials at once (default: tune.max_concurrent_trials, else what the cluster fits)",
    )
    add_set_argument(p, "fix a config value for every trial, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument(
        "--endpoint-url", default="", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS)"
    )
    p.add_argument("--region", default="", help="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: RAY_ADDRESS, a running cluster, else a new local one; "
        "'local' forces a new local one)",
    )
    p.add_argument(
        "--retry-errored",
        action="store_true",
        help="on resume, run errored trials again from their last checkpoint (default: keep them errored)",
    )
    p.add_argument(
        "--no-data-check",
        dest="check_data",
        action="store_false",
        help="skip reading the training data on the driver before the search starts",
    )
    p.add_argument(
        "--mlflow-uri",
        default="",
        help="also log every trial to MLflow: a tracking URI such as file:./mlruns or http://host:5000",
    )
    return p.parse_args(argv)


def _count(least: int):
    """argparse type: an integer >= ``least`` (argparse then exits 2 naming the option)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {n}")
        return n

    return parse


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    from ganray.tune.driver import SearchError, SearchOptions, run_search
    from ganray.tune.outcome import table
    from ganray.tune.space import load_space

    try:
        space = load_space(args.space, args.overrides, args.num_samples)
        opts = SearchOptions(
            storage_uri=args.storage,
            name=args.name,
            resume=args.resume,
            endpoint_url=args.endpoint_url,
            region=args.region,
            address=args.address,
            max_concurrent=args.max_concurrent,
            retry_errored=args.retry_errored,
            check_data=args.check_data,
            mlflow_uri=args.mlflow_uri,
        )
        outcome = run_search(space, opts)
    except (ConfigError, SearchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before Tune took over Ctrl-C (it handles it during the search)
        print("\ninterrupted before the search started", file=sys.stderr)
        return 3
    print(f"\nexperiment {outcome.experiment_uri}\n")
    print(table(outcome))
    unfinished = [t.trial_id for t in outcome.trials if t.status == "unfinished"]
    if unfinished:
        print(f"\nsearch interrupted with {len(unfinished)} unfinished trial(s); re-run the same command "
              f"to resume it", file=sys.stderr)  # fmt: skip
        return 3
    best = outcome.best
    if best is None:
        print(f"\nno trial produced {outcome.metric}; see the errors above", file=sys.stderr)
        return 1
    print(
        f"\nbest: trial {best.trial_id}, {outcome.metric} {best.best:.2f} at epoch {best.best_epoch}, "
        f"checkpoint {best.checkpoint_uri}"
    )
    print(f"written: {outcome.experiment_uri}/best.json, {outcome.experiment_uri}/results.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
