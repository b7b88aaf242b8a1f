"""Search-space files: format, validation errors, conditional sampling; the search's pure helpers."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ganray.tune.driver import max_concurrency
from ganray.tune.outcome import Outcome, TrialOutcome, results_rows, short_error, table
from ganray.tune.space import SpaceError, load_space, parse_space
from ganray.tune.trial import TrialContext, best_of

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "tune_spaces").glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = {
    "base": "quickstart",
    "fixed": {"train.epochs": 4, "metrics.eval_every": 2},
    "search": {
        "optim.name": {"type": "choice", "values": ["adam", "sgd"]},
        "optim.lr": {"type": "loguniform", "low": "1e-5", "high": 1e-2},
        "optim.beta1": {"type": "uniform", "low": 0.0, "high": 0.9, "when": {"optim.name": ["adam"]}},
        "optim.momentum": {"type": "uniform", "low": 0.5, "high": 0.9, "when": {"optim.name": ["sgd"]}},
        "train.d_steps": {"type": "int", "low": 1, "high": 3},
        "train.loss": {"type": "const", "value": "hinge", "when": {"optim.name": ["sgd"]}},
    },
    "points_to_evaluate": [{"optim.name": "adam", "optim.lr": 2e-4, "optim.beta1": 0.5}],
    "tune": {"num_samples": 3, "scheduler": {"type": "asha", "grace_period": 2}},
}


def space_with(**changes):
    raw = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path):
    space = load_space(str(path))
    assert space.params and space.tune.metric == "fid" and space.tune.mode == "min"
    for point in space.points:
        space.trial_config(point)  # every point builds


def test_quickstart_starts_from_the_dcgan_recipe():
    space = load_space(str(ROOT / "tune_spaces" / "quickstart.yaml"))
    cfg = space.trial_config(space.points[0])
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.beta1) == ("adam", 2e-4, 0.5)
    assert space.tune.scheduler["type"] == "asha"
    assert space.tune.scheduler["grace_period"] % space.trial_config({}).metrics.eval_every == 0


def test_conditional_params_are_sampled_only_when_their_condition_holds():
    space = parse_space(GOOD)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    fn = space.define_by_run()
    seen = set()
    for _ in range(30):
        trial = study.ask()
        consts = fn(trial) or {}
        params = {**trial.params, **consts}
        name = params["optim.name"]
        seen.add(name)
        assert ("optim.beta1" in params) == (name == "adam")
        assert ("optim.momentum" in params) == (name == "sgd")
        assert consts == ({"train.loss": "hinge"} if name == "sgd" else {})
        cfg = space.trial_config(params)
        assert cfg.train.loss == ("hinge" if name == "sgd" else "bce")
        study.tell(trial, 1.0)
    assert seen == {"adam", "sgd"}


def test_variants_of_one_key_map_to_the_config_key():
    space = load_space(str(ROOT / "tune_spaces" / "dcgan-variants.yaml"))
    cfg = space.trial_config({"model.spectral_norm": True, "train.loss#sn": "wgan-gp"})
    assert cfg.train.loss == "wgan-gp"


def test_overrides_extend_fixed_and_samples_override_nothing_else():
    space = parse_space(GOOD, overrides=["train.epochs=2", "data.subset=500"], num_samples=7)
    cfg = space.trial_config({"optim.lr": 1e-3}, storage={"uri": "/x", "run_name": "t1"})
    assert (cfg.train.epochs, cfg.data.subset, cfg.optim.lr) == (2, 500, 1e-3)
    assert (cfg.storage.uri, cfg.storage.run_name) == ("/x", "t1")
    assert space.tune.num_samples == 7


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"serch": {}}, "serch: unknown key; allowed keys: base, description, fixed"),
        ({"base": "nope"}, "base: config 'nope': no such file and no such preset"),
        ({"fixed/optim.lrr": 1}, "fixed.optim.lrr: 'optim.lrr' is not a config key; optim has: name, lr"),
        (
            {"fixed/train.epochs": 0},
            "fixed.train.epochs: train.epochs: 0 is out of range; allowed [1, 100000]",
        ),
        ({"fixed/storage.uri": "/tmp"}, "fixed.storage.uri: storage is set by the command line"),
        (
            {"search/optim.lr/type": "gauss"},
            "search.optim.lr.type: 'gauss' is not a distribution; choose one of",
        ),
        ({"search/optim.lr/high": 1e-6}, "search.optim.lr: low (1e-05) must be < high (1e-06)"),
        (
            {"search/optim.lr/high": 5.0},
            "search.optim.lr.high: optim.lr: 5.0 is out of range; allowed [1e-07, 1.0]",
        ),
        ({"search/optim.lr/low": 0}, "search.optim.lr.low: must be > 0 for a log scale"),
        (
            {"search/optim.lr/values": [1]},
            "search.optim.lr.values: unknown key; allowed keys: high, low, type, when",
        ),
        (
            {"search/optim.name/values": ["adam", "adamw"]},
            "search.optim.name.values: optim.name: 'adamw' is not allowed; choose one of: adam, rmsprop, sgd",
        ),
        ({"search/optim.name/type": "uniform"}, "search.optim.name.type: uniform needs a numeric config key"),
        (
            {"search/data.subset": {"type": "int", "low": 1, "high": 9}},
            "search.data.subset: cannot be searched",
        ),
        (
            {"search/train.workers": {"type": "int", "low": 1, "high": 2}},
            "search.train.workers: cannot be searched",
        ),
        ({"search/model.bogus": {"type": "choice", "values": [1]}}, "'model.bogus' is not a config key"),
        (
            {"search/optim.beta1/when": {"optim.name": ["rmsprop"]}},
            "search.optim.beta1.when.optim.name: 'rmsprop' is never sampled; optim.name takes: ['adam', 'sgd']",
        ),
        (
            {"search/train.d_steps/when": {"optim.lr": [1e-3]}},
            "search.train.d_steps.when.optim.lr: conditions need a choice or const parameter",
        ),
        (
            {"search/optim.lr/when": {"train.loss": ["hinge"]}},
            "train.loss is searched after this parameter; conditions are evaluated in file order",
        ),
        ({"fixed/train.d_steps": 2}, "search.train.d_steps: is also set in fixed"),
        (
            {"points_to_evaluate": [{"optim.lr": 0.5}]},
            "points_to_evaluate[0].optim.lr: 0.5 is outside the space; allowed: [1e-05, 0.01] (loguniform)",
        ),
        (
            {"points_to_evaluate": [{"optim.name": "sgd", "optim.beta1": 0.5}]},
            "points_to_evaluate[0].optim.beta1: is not sampled in this point (needs optim.name in ['adam'])",
        ),
        ({"points_to_evaluate": [{"train.loss": "hinge"}]}, "train.loss: is not a searched parameter"),
        ({"tune/num_samples": 0}, "tune.num_samples: expected an integer >= 1, got 0"),
        ({"tune/metric": "loss"}, "tune.metric: 'loss' is not a trial metric; choose one of: fid"),
        ({"fixed/metrics.fid": False}, "tune.metric: fid is not computed: set metrics.fid: true in fixed"),
        ({"tune/mode": "best"}, "tune.mode: 'best' is not allowed; choose min or max"),
        ({"tune/searcher": {"sampler": "cmaes"}}, "tune.searcher.sampler: 'cmaes' is not supported"),
        (
            {"tune/scheduler": {"type": "pbt"}},
            "tune.scheduler.type: 'pbt' is not supported; choose one of: asha",
        ),
        (
            {"tune/scheduler/grace_period": 3},
            "tune.scheduler.grace_period: 3 is not a multiple of metrics.eval_every (2)",
        ),
        ({"tune/scheduler/max_t": 9}, "tune.scheduler.max_t: 9 exceeds train.epochs (4)"),
        (
            {"search/train.loss": {"type": "choice", "values": ["bce", "wgan-gp"]}},
            "search: the combination optim.name=adam, train.loss=wgan-gp is not a valid config: "
            "train.loss=wgan-gp needs a discriminator without BatchNorm",
        ),
        (
            {"search/train.d_steps#b": {"type": "int", "low": 1, "high": 2}},
            "search.train.d_steps#b: train.d_steps is searched twice; variants (key#name) each need a `when`",
        ),
    ],
)
def test_malformed_spaces_name_the_key_and_the_problem(changes, fragment):
    with pytest.raises(SpaceError) as e:
        parse_space(space_with(**changes), path="s.yaml")
    assert fragment in str(e.value)
    assert str(e.value).startswith("s.yaml: ")


def test_overlapping_variants_are_rejected():
    raw = space_with(
        **{
            "search/optim.momentum#a": {
                "type": "uniform",
                "low": 0.1,
                "high": 0.2,
                "when": {"optim.name": ["sgd"]},
            },
        }
    )
    with pytest.raises(
        SpaceError, match="two variants of optim.momentum are both sampled when optim.name=sgd"
    ):
        parse_space(raw)


def test_set_overrides_are_validated():
    with pytest.raises(SpaceError, match=r"fixed.train.epochs: train.epochs: expected an integer, got 'x'"):
        parse_space(GOOD, overrides=["train.epochs=x"])
    with pytest.raises(SpaceError, match="expected key=value"):
        parse_space(GOOD, overrides=["train.epochs"])


def test_malformed_file_fails_before_ray_starts(tmp_path, capsys):
    from ganray.tune.__main__ import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(space_with(**{"search/optim.lr/high": 5.0}), sort_keys=False))
    assert main(["--space", str(bad), "--storage", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "search.optim.lr.high: optim.lr: 5.0 is out of range" in err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert not (tmp_path / "out").exists()


def test_not_yaml_fails_with_file_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [unclosed\n")
    with pytest.raises(SpaceError, match="bad.yaml: not valid YAML"):
        load_space(str(bad))


# ---------------------------------------------------------------- driver helpers


def test_concurrency_from_cluster_and_trial_resources():
    space = parse_space(GOOD, overrides=["train.workers=2", "train.cpus_per_worker=1.5"])
    ctx = TrialContext(space, "/exp")
    assert max_concurrency(ctx, {"CPU": 8}) == 2  # 8 // 3 CPUs per trial
    assert max_concurrency(ctx, {"CPU": 64}) == 3  # never more than num_samples
    assert max_concurrency(ctx, {"CPU": 8}, override=1) == 1
    with pytest.raises(RuntimeError, match="one trial needs 3 CPUs"):
        max_concurrency(ctx, {"CPU": 2})
    assert max_concurrency(ctx, {"CPU": 64, "GPU": 5}) == 2  # use_gpu=auto: 2 GPUs per trial


def test_best_of_takes_the_best_evaluated_epoch_not_the_last():
    history = [{"epoch": 1, "fid": 80.0}, {"epoch": 2}, {"epoch": 3, "fid": 41.5}, {"epoch": 4, "fid": 60.0}]
    assert best_of(history, "fid", "min") == (41.5, 3)
    assert best_of(history, "fid", "max") == (80.0, 1)
    assert best_of([{"epoch": 1, "fid": float("nan")}], "fid", "min") == (None, None)


def test_short_error_picks_the_innermost_exception_line():
    text = (
        "ray.exceptions.RayTaskError(WorkerGroupError): Training failed\n  Traceback...\n"
        "ganray.train.loop.NonFiniteLossError: non-finite loss (NaN or inf) at epoch 1, step 25"
    )
    assert short_error(text).startswith("ganray.train.loop.NonFiniteLossError: non-finite loss")
    assert short_error(None) == ""


def test_table_and_rows_show_errored_trials_with_their_reason():
    ok = TrialOutcome(
        "t1",
        "finished",
        {"optim.lr": 2e-4},
        "/e/trials/t1",
        2,
        40.0,
        2,
        "/c.pt",
        history=[{"epoch": 1, "fid": 50.0}, {"epoch": 2, "fid": 40.0}],
    )
    bad = TrialOutcome("t2", "errored", {"optim.lr": 1.0}, "/e/trials/t2", error="NonFiniteLossError: nan")
    outcome = Outcome("/e", "fid", "min", [bad, ok])
    assert outcome.best is ok
    text = table(outcome)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["trial", "status", "best", "fid"]
    assert lines[2].startswith("t1") and lines[3].startswith("t2")
    assert "t2 errored: NonFiniteLossError: nan" in text
    rows = results_rows(outcome)
    assert [(r["trial_id"], r.get("epoch")) for r in rows] == [("t2", None), ("t1", 1), ("t1", 2)]
    assert rows[1]["param.optim.lr"] == 2e-4 and rows[0]["error"] == "NonFiniteLossError: nan"


# ---------------------------------------------------------------- pull and generate (a tiny local run)


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """EXPERIMENT/trials/t1: a 1-epoch in-process run laid out as a search trial (no FID)."""
    from ganray.config import load_config
    from ganray.train.loop import Trainer

    exp = tmp_path_factory.mktemp("exp")
    cfg = load_config("quickstart", [f"storage.uri={exp / 'trials'}", "storage.run_name=t1", "data.subset=300",
                                     "model.ngf=8", "model.ndf=8", "train.batch_size=32", "train.epochs=1",
                                     "train.grid_size=4", "metrics.fid=false"])  # fmt: skip
    Trainer(cfg).fit()
    return exp


def test_pull_a_trial_epoch_and_generate_a_grid(tiny_experiment, tmp_path):
    from PIL import Image

    from ganray.generate import generate
    from ganray.pull import pull

    local = pull(str(tiny_experiment), str(tmp_path / "d"), trial="t1", epoch=1)
    assert Path(local).name == "epoch_0001.pt"
    assert {p.name for p in (tmp_path / "d").iterdir()} >= {"epoch_0001.pt", "epoch_0001.json", "config.yaml",
                                                           "metrics.jsonl", "pull.json"}  # fmt: skip
    out = generate(str(tmp_path / "d"), n=9, out=str(tmp_path / "g.png"), seed=1)
    with Image.open(out) as im:
        assert im.size == (3 * 34 + 2, 3 * 34 + 2)


def test_pull_refuses_missing_and_corrupt_checkpoints(tiny_experiment, tmp_path):
    import shutil

    from ganray.pull import PullError, pull

    with pytest.raises(PullError, match="best.json does not exist"):
        pull(str(tiny_experiment), str(tmp_path / "a"))
    with pytest.raises(PullError, match="no checkpoint for epoch 7; kept epochs: 1"):
        pull(str(tiny_experiment), str(tmp_path / "a"), trial="t1", epoch=7)
    with pytest.raises(PullError, match="--epoch needs --trial"):
        pull(str(tiny_experiment), str(tmp_path / "a"), epoch=1)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_experiment, broken)
    ckpt = broken / "trials" / "t1" / "checkpoints" / "epoch_0001.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(PullError, match="does not match the sha256 in its sidecar"):
        pull(str(broken), str(tmp_path / "b"), trial="t1")


# ---------------------------------------------------------------- issue 11 item 13


def test_a_when_on_a_base_value_that_never_holds_is_an_error():
    """quickstart fixes model.arch=dcgan, so a demod-only parameter would silently never be sampled."""
    raw = space_with(
        **{"search/optim.beta1/when": {"model.arch": ["dcgan-demod"]}, "points_to_evaluate": None}
    )
    with pytest.raises(SpaceError, match=r"search.optim.beta1.when: never holds: model.arch is 'dcgan'"):
        parse_space(raw, path="s.yaml")


def test_a_when_that_no_combination_of_choices_satisfies_is_an_error():
    """train.loss is hinge only with sgd, so {adam, hinge} never happens although each value is possible."""
    late = {
        "type": "choice",
        "values": ["none", "step"],
        "when": {"optim.name": ["adam"], "train.loss": ["hinge"]},
    }
    raw = space_with(**{"search/schedule.name": late})
    with pytest.raises(SpaceError, match=r"search.schedule.name.when: never holds: no combination"):
        parse_space(raw, path="s.yaml")


def test_a_duplicate_key_in_a_space_file_is_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(
        "base: quickstart\n"
        "search:\n"
        "  optim.lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}\n"
        "  optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-3}\n"
    )
    with pytest.raises(SpaceError, match=r"found duplicate key 'optim.lr' \(first at line 3\)"):
        load_space(str(path))


def test_a_duplicate_key_in_a_nested_mapping_is_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(
        "base: quickstart\nsearch:\n  optim.lr: {type: loguniform, low: 1.0e-5, low: 1.0e-4, high: 1}\n"
    )
    with pytest.raises(SpaceError, match="found duplicate key 'low'"):
        load_space(str(path))


def test_numeric_parameters_are_checked_at_their_high_bound_too():
    """batch_size 128 divides by 2 workers; 129, the high bound, does not."""
    raw = space_with(
        **{"fixed/train.workers": 2, "search/train.batch_size": {"type": "int", "low": 128, "high": 129}}
    )
    with pytest.raises(SpaceError, match=r"numeric parameters at their high bound: .*train.batch_size=129"):
        parse_space(raw, path="s.yaml")


def test_a_space_too_large_to_build_every_combination_says_so(caplog):
    from ganray.tune import space_check

    raw = space_with(**{"search/train.grid_size": {"type": "choice", "values": list(range(1, 9))}})
    caplog.set_level("WARNING", logger="ganray.tune")
    old = space_check.MAX_COMBINATIONS
    space_check.MAX_COMBINATIONS = 5  # 2 optimizers x 8 grid sizes = 16 combinations
    try:
        parse_space(raw, path="s.yaml")
    finally:
        space_check.MAX_COMBINATIONS = old
    assert (
        "the space has 16 combinations of choices; cross-field rules were checked for the first 5"
        in caplog.text
    )
