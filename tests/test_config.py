"""Config loading and validation: every error names the key and the fix."""

import pytest

from ganray.config import Config, ConfigError, build_config, list_presets, load_config


def test_defaults_are_valid():
    cfg = build_config({})
    assert isinstance(cfg, Config)
    assert cfg.model.arch == "dcgan" and cfg.optim.beta1 == 0.5 and cfg.model.latent_dim == 100


def test_presets_load():
    assert {"quickstart", "dcgan"} <= set(list_presets())
    for name in list_presets():
        load_config(name)


def test_overrides_parse_yaml_values():
    cfg = load_config("quickstart", ["train.epochs=7", "optim.lr=1e-3", "model.spectral_norm=true"])
    assert cfg.train.epochs == 7 and cfg.optim.lr == 1e-3 and cfg.model.spectral_norm is True


def test_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  name: rmsprop\n  lr: 5e-5\ntrain:\n  loss: hinge\n")
    cfg = load_config(str(p))
    # YAML 1.1 reads 5e-5 as a string; floats accept numeric strings.
    assert cfg.optim.name == "rmsprop" and cfg.optim.lr == pytest.approx(5e-5)


@pytest.mark.parametrize(
    "override, fragment",
    [
        (["model.archx=dcgan"], "model: unknown key 'archx'; allowed keys: arch"),
        (
            ["optim.name=adamw"],
            "optim.name: 'adamw' is not allowed; choose one of: adam, rmsprop, sgd, nesterov",
        ),
        (["train.epochs=0"], "train.epochs: 0 is out of range; allowed [1, 100000]"),
        (["train.epochs=two"], "train.epochs: expected an integer, got 'two'"),
        (["optim.lr=fast"], "optim.lr: expected a number, got 'fast'"),
        (["model.spectral_norm=3"], "model.spectral_norm: expected true or false"),
        (["model.resolution=48", "data.resolution=48"], "model.resolution: 48 must be a power of two"),
        (["bogus.key=1"], "config: unknown key 'bogus'"),
        (["data.resolution=64"], "data.resolution (64) must equal model.resolution (32)"),
        (["train.workers=3"], "must be divisible by train.workers (3)"),
        (["nokey"], "expected section.key=value"),
        (["train.loss=wgan-gp"], "train.loss=wgan-gp needs a discriminator without BatchNorm"),
    ],
)
def test_validation_errors_name_key_and_allowed_values(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", override)
    assert fragment in str(e.value)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="no such preset; presets: .*quickstart"):
        load_config("no-such-thing")


def test_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(p))


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config("quickstart", ["train.seed=3"])
    p = tmp_path / "rt.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(str(p)) == cfg
