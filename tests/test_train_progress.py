"""The lines a training run logs: progress with ETA, and one summary per epoch."""

from ganray.train.progress import epoch_summary, fmt_seconds, progress_line


def test_progress_line_extrapolates_the_eta_from_the_steps_done():
    # 1.5 of 3 epochs of 100 steps took 60 s: 150 steps to go at 0.4 s each
    line = progress_line(2, 3, 50, 100, 123.4, 60.0)
    assert line == "epoch 2/3 step 50/100  123 img/s  ETA 0:01:00"
    assert progress_line(1, 1, 0, 10, 0.0, 0.0).endswith("ETA ?")


def test_epoch_summary_names_the_metric_the_stage_and_a_failed_evaluation():
    row = {"epoch": 2, "d_loss": 0.7123, "g_loss": 2.1, "images_per_s": 51.6, "epoch_seconds": 190.9}
    assert epoch_summary(row, 3) == "epoch 2/3 done: d_loss 0.712, g_loss 2.100, 52 img/s, 0:03:10"
    fid = {"fid": 45.204, "fid_label": "FID [fashion-mnist-classifier]", "fid_num_samples": 2000}
    grown = {**row, **fid, "resolution": 16.0, "alpha": 0.4}
    assert "FID [fashion-mnist-classifier] 45.20 (2000 samples), 16 px alpha 0.40, 52 img/s" in epoch_summary(
        grown, 3
    )
    assert "32 px, 52 img/s" in epoch_summary(
        {**row, "resolution": 32.0, "alpha": 1.0}, 3
    )  # no alpha once grown
    failed = epoch_summary({**row, "eval_error": "BackboneError: weights missing"}, 3)
    assert "evaluation failed (BackboneError: weights missing)" in failed


def test_fmt_seconds():
    assert fmt_seconds(3725.9) == "1:02:05" and fmt_seconds(float("nan")) == "?"
