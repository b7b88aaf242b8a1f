"""ganray.analysis: reading experiments, the results table, comparisons and importances (no Ray)."""

from __future__ import annotations

import json

import pytest

from ganray.analysis import compare, importance, table
from ganray.analysis.experiment import Experiment, Trial, load_experiment
from ganray.storage import Storage
from ganray.train import artifacts

SPACE = {
    "search": {
        "optim.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
        "optim.name": {"type": "choice", "values": ["adam", "sgd"]},
        "schedule.gamma#step": {
            "type": "uniform",
            "low": 0.1,
            "high": 0.7,
            "when": {"schedule.name": ["step"]},
        },
    },
    "tune": {"metric": "fid", "mode": "min"},
}


def _trial(
    tid: str, lr: float, opt: str, fids: list[float | None], status: str = "finished", ngf: int = 32
) -> Trial:
    history = [
        {
            "epoch": e,
            "images_seen": 100 * e,
            "epoch_seconds": 2.0,
            "fid": f,
            "val_d_acc_real": 0.8,
            "val_d_acc_fake": 0.6,
            "val_g_loss": 1.0 + e,
            "lr_g": lr,
        }
        for e, f in enumerate(fids, start=1)
    ]
    cfg = {
        "model": {"arch": "dcgan", "ngf": ngf, "ndf": 32},
        "optim": {"lr": lr, "name": opt},
        "schedule": {"name": "none"},
    }
    return Trial(
        tid, f"/x/{tid}", status, params={"optim.lr": lr, "optim.name": opt}, config=cfg, history=history
    )


def _exp(*trials: Trial) -> Experiment:
    return Experiment("/x", "fid", "min", list(trials), SPACE)


def test_summaries_rank_by_best_fid_over_all_epochs():
    exp = _exp(
        _trial("a", 1e-3, "adam", [50.0, 30.0, 40.0]),
        _trial("b", 2e-4, "adam", [45.0, 35.0]),
        _trial("c", 1e-1, "sgd", [None], status="errored"),
    )
    s = table.summarize(exp)
    assert [x.trial.trial_id for x in s] == ["a", "b", "c"]
    assert (s[0].best, s[0].best_epoch, s[0].epochs) == (30.0, 2, 3)
    assert s[0].avg_val_d_acc == pytest.approx(0.7) and s[0].best_val_g_loss == 2.0
    assert s[2].best is None and table.best(exp).trial.trial_id == "a"


def test_comparisons_group_by_config_values_best_group_first():
    exp = _exp(
        _trial("a", 1e-3, "adam", [30.0], ngf=64),
        _trial("b", 2e-4, "adam", [35.0]),
        _trial("c", 1e-4, "sgd", [20.0]),
        _trial("d", 1e-2, "sgd", [None], status="errored"),
    )
    comps = {c.slug: c for c in compare.comparisons(table.summarize(exp), "fid", "min")}
    assert comps["by_optimizer"].rows == [["sgd", 2, 1, 20.0, "c"], ["adam", 2, 2, 30.0, "a"]]
    assert [r[0] for r in comps["by_capacity"].rows] == ["ngf=32 ndf=32", "ngf=64 ndf=32"]
    assert comps["by_scheduler"].rows == [["none", 4, 3, 20.0, "c"]]
    assert [r[0] for r in comps["per_run"].rows] == ["c", "a", "b", "d"]
    md = comps["by_optimizer"].markdown()
    assert "| sgd | 2 | 1 | 20 | c |" in md
    assert comps["by_optimizer"].csv().splitlines()[1] == "sgd,2,1,20.0,c"


def test_lr_bins_are_exact_for_few_values_and_log_spaced_otherwise():
    few = compare.lr_bins([1e-3, 2e-4])
    assert few(2e-4) == "0.0002"
    many = compare.lr_bins([1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    labels = [many(v) for v in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)]
    assert len(set(labels)) == 5 and labels[0].startswith("[1e-05") and labels[-1].endswith("]")


def test_importance_from_optuna_with_enough_trials_else_from_the_table():
    trials = [_trial(str(i), lr, "adam" if i % 2 else "sgd", [lr * 1e4]) for i, lr in enumerate([1e-5, 1e-4, 1e-3, 3e-3, 5e-3, 8e-3])]  # fmt: skip
    imp, method = importance.importances(SPACE, table.summarize(_exp(*trials)), "min")
    assert method.startswith("Optuna PED-ANOVA") and set(imp) <= {"optim.lr", "optim.name"}
    assert max(imp, key=imp.get) == "optim.lr"  # FID is a function of lr alone here
    imp2, method2 = importance.importances(SPACE, table.summarize(_exp(*trials[:2])), "min")
    assert "Spearman" in method2 and sum(imp2.values()) == pytest.approx(1.0)
    assert importance.from_table([]) == {}


def test_rebuilt_study_skips_values_outside_the_space_and_unevaluated_trials():
    trials = [
        _trial("a", 1e-3, "adam", [10.0]),
        _trial("b", 5.0, "rmsprop", [20.0]),
        _trial("c", 1e-3, "sgd", [None]),
    ]
    study = importance.rebuild_study(SPACE, table.summarize(_exp(*trials)), "min")
    assert [t.params for t in study.trials] == [{"optim.lr": 1e-3, "optim.name": "adam"}]


def test_table_rows_and_arrow_types():
    exp = _exp(
        _trial("a", 1e-3, "adam", [30.0, 20.0]), Trial("z", "/x/z", "running", params={"optim.name": 3})
    )
    exp.trials[0].params["optim.name"] = "adam"
    arrow = table.to_arrow(exp)
    assert arrow.column_names[:7] == [
        "trial_id",
        "status",
        "error",
        "arch",
        "epoch",
        "images_seen",
        "wall_seconds",
    ]
    rows = arrow.to_pylist()
    assert [(r["trial_id"], r["epoch"], r["wall_seconds"]) for r in rows] == [
        ("a", 1, 2.0),
        ("a", 2, 4.0),
        ("z", None, None),
    ]
    assert rows[0]["param.optim.name"] == "adam" and rows[2]["param.optim.name"] == "3"  # mixed -> strings


def test_load_experiment_of_a_single_run_reports_bad_lines(tmp_path):
    s = Storage()
    run = tmp_path / "run1"
    artifacts.write_metrics(s, str(run), [{"epoch": 1, "fid": 9.0}, {"epoch": 2, "fid": 8.0}])
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write("not json\n" + json.dumps({"no_epoch": 1}) + "\n")
    (run / "done.json").write_text("{}")
    exp = load_experiment(str(run), s)
    (t,) = exp.trials
    assert (t.trial_id, t.status, [r["epoch"] for r in t.history]) == ("run1", "finished", [1, 2])
    assert [p.message.split(";")[0] for p in exp.problems] == [
        "line 3 is not JSON",
        "line 4 has no integer 'epoch'",
    ]
    with pytest.raises(FileNotFoundError, match="holds no experiment"):
        load_experiment(str(tmp_path / "empty"), s)


def test_status_from_run_files_while_the_search_runs(tmp_path):
    s = Storage()
    exp_dir = tmp_path / "exp"
    (exp_dir / "space.yaml").parent.mkdir(parents=True)
    (exp_dir / "space.yaml").write_text(
        "search:\n  optim.lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}\n"
    )
    for tid in ("t1", "t2", "t3"):
        artifacts.write_metrics(s, str(exp_dir / "trials" / tid), [{"epoch": 1, "fid": 5.0}])
        (exp_dir / "trials" / tid / "config.yaml").write_text("optim: {lr: 0.001}\n")
    (exp_dir / "trials" / "t1" / "done.json").write_text("{}")
    (exp_dir / "trials" / "t2" / "error.json").write_text(
        json.dumps({"error": "NonFiniteLossError", "message": "nan"})
    )
    (exp_dir / "trials" / "_ray").mkdir()
    exp = load_experiment(str(exp_dir), s)
    got = {t.trial_id: (t.status, t.error, t.params) for t in exp.trials}
    assert got == {
        "t1": ("finished", "", {"optim.lr": 0.001}),
        "t2": ("errored", "NonFiniteLossError: nan", {"optim.lr": 0.001}),
        "t3": ("running", "", {"optim.lr": 0.001}),
    }


def test_progressive_runs_get_loss_per_resolution_and_other_runs_do_not():
    from ganray.analysis import plots

    prog = _trial("p", 1e-3, "adam", [30.0, 25.0, 20.0, 15.0])
    for r, res in zip(prog.history, [8, 8, 16, 16]):
        r.update(resolution=res, d_loss=1.0, g_loss=2.0)
    flat = _trial("f", 1e-3, "adam", [30.0, 20.0])
    figs = plots.progressive_losses(table.summarize(_exp(prog, flat)))
    assert [f.path for f in figs] == ["plots/progressive_p.png"] and figs[0].data.startswith(b"\x89PNG")


def test_a_diverged_trial_does_not_flatten_the_loss_plot():
    from ganray.analysis import plots

    ok, bad = _trial("ok", 1e-3, "adam", [30.0, 20.0]), _trial("bad", 1.0, "sgd", [None], status="errored")
    for r in ok.history:
        r.update(d_loss=1.0, g_loss=2.0)
    bad.history[0].update(d_loss=1e24, g_loss=1e21)
    (fig,) = plots.losses_and_accuracy(table.summarize(_exp(ok, bad)))
    assert fig.caption.startswith("Train (solid)") and len(fig.data) > 1000
    import matplotlib.pyplot as plt

    ax = plt.figure().add_subplot()
    ax.plot([1, 2], [1.0, 1e24])
    ax.plot([1, 2], [0.5, 2.0])
    ax.set_title("D loss")
    plots._clip_if_wide(ax)
    assert ax.get_ylim()[1] < 100 and "clipped" in ax.get_title()
    plt.close("all")
