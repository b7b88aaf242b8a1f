"""``python -m ganray.analyze``: turn an experiment on storage into tables, plots, images and one HTML page.

    python -m ganray.analyze s3://bucket/searches/quickstart --out report/
    python -m ganray.analyze ./runs/quickstart --out report/      # also while the search runs

EXPERIMENT_URI is what ``ganray.tune`` printed as "experiment" (or a single
``ganray.train`` run folder). No Ray cluster is needed. Re-running the command
updates the report in place. Missing or corrupt files are listed in the page
and skipped. Prints the path of OUT/index.html. Exit status: 0 written,
2 no experiment at that URI or storage unreachable.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ganray.cli_args import uri
from ganray.logs import setup_logging

log = logging.getLogger("ganray.analysis")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ganray.analyze",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("experiment", type=uri(), help="experiment URI: a local path or s3://bucket/prefix/NAME")
    p.add_argument(
        "--out", required=True, type=uri(), help="report folder (created; files in it are replaced)"
    )
    p.add_argument(
        "--endpoint-url", default="", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS)"
    )
    p.add_argument("--region", default="", help="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    p.add_argument(
        "--no-models",
        dest="with_models",
        action="store_false",
        help="skip the figures that load the best checkpoint (style mixing, filters, activations)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    from ganray.analysis.report import build
    from ganray.storage import Storage, StorageError

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"error: --out {args.out} is a file; give a folder for the report", file=sys.stderr)
        return 2
    try:
        rep = build(args.experiment, args.out, Storage(args.endpoint_url, args.region), args.with_models)
    except (FileNotFoundError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable --out, S3 credentials or network
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    for p in rep.experiment.problems:
        log.warning("skipped %s: %s", p.uri, p.message)
    if rep.best is not None:
        print(
            f"best: trial {rep.best.trial.trial_id}, {rep.experiment.metric} {rep.best.best:.2f} at epoch {rep.best.best_epoch}"
        )
    print(rep.index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
