"""Config evolution: retired keys still load, and adding a field never renames a run."""

import logging

from ganray.config import Config, load_config
from ganray.config_compat import BASELINE, identity
from ganray.train.loop import run_name_for


def test_run_names_of_release_0_1_are_unchanged():
    """Names ganray 0.1 gave (it hashed every field); computed with that release."""
    assert run_name_for(load_config("quickstart")) == "dcgan-72653c3b"
    assert run_name_for(load_config("quickstart", ["optim.lr=1e-3"])) == "dcgan-9a799dae"
    demod = load_config("quickstart", ["model.arch=dcgan-demod", "train.ema_decay=0.999"])
    assert run_name_for(demod) == "dcgan-demod-6113201d"


def test_a_field_added_at_its_default_keeps_the_identity():
    defaults = Config().to_dict()
    cfg = load_config("quickstart").to_dict()
    # A later release adds model.style_mix (flat) and a family section model.sg2 (nested),
    # and a whole new top-level section: at their defaults nothing changes.
    new_defaults = {
        **defaults,
        "model": {**defaults["model"], "style_mix": 0.9, "sg2": {"r1": 10.0, "pl": 2.0}},
        "augment": {"p": 0.0},
    }
    at_default = {**cfg, "model": {**cfg["model"], "style_mix": 0.9, "sg2": {"r1": 10.0, "pl": 2.0}}}
    at_default["augment"] = {"p": 0.0}
    assert identity(at_default, new_defaults) == identity(cfg, defaults)
    changed = {**at_default, "model": {**at_default["model"], "sg2": {"r1": 5.0, "pl": 2.0}}}
    assert identity(changed, new_defaults)["model"]["sg2"] == {"r1": 5.0}  # only what differs
    assert set(identity(cfg, defaults)) == set(BASELINE)  # storage never names a run


def test_a_retired_key_still_loads(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  loader_workers: 0\n  subset: 100\n")
    assert load_config(str(old)).data.subset == 100
    with caplog.at_level(logging.WARNING, logger="ganray"):
        load_config("quickstart", ["data.loader_workers=4"])
    assert "data.loader_workers=4 is ignored: the setting was removed" in caplog.text
    assert not hasattr(Config().data, "loader_workers")
