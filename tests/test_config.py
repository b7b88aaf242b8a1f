"""Config loading and validation: every error names the key and the fix."""

import re

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


# ---------------------------------------------------------------- issue 11 items 1, 2, 12, 14


def _float_keys() -> list[str]:
    import dataclasses
    import typing

    from ganray.config import Config

    keys = []
    for section, cls in typing.get_type_hints(Config).items():
        for name, typ in typing.get_type_hints(cls).items():
            if typ is float:
                keys.append(f"{section}.{name}")
    assert keys and all(
        dataclasses.is_dataclass(typing.get_type_hints(Config)[k.split(".")[0]]) for k in keys
    )
    return keys


@pytest.mark.parametrize("key", _float_keys())
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "inf", "1e999"])
def test_every_float_refuses_non_finite_values(key, value):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: .* is not a finite number"):
        load_config(None, [f"{key}={value}"])


@pytest.mark.parametrize("value, fragment", [(2**63, "does not fit in 64 bits"), (2**32, "out of range")])
def test_seed_beyond_its_range_is_refused(value, fragment):
    with pytest.raises(ConfigError, match=f"train.seed: {value} (is )?{fragment}"):
        load_config(None, [f"train.seed={value}"])
    assert load_config(None, [f"train.seed={2**32 - 1}"]).train.seed == 2**32 - 1


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("storage.uri=s3:/x", "did you mean 's3://x'"),
        ("storage.uri=s3://", "names no bucket"),
        ("storage.uri=gs://b", "gs:// filesystem is not installed"),
        ("storage.uri=memory://", "memory:// lives inside one process"),
        ("storage.run_name=../../escape", "is not a single folder name"),
        ("storage.run_name=a/b", "is not a single folder name"),
        ("data.uri=s3:/x", "did you mean 's3://x'"),
    ],
)
def test_storage_uri_and_run_name_are_checked(override, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(None, [override])


def test_duplicate_keys_in_a_config_file_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 2\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="found duplicate key 'epochs'"):
        load_config(str(path))


def test_a_folder_or_a_binary_file_as_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_config(str(tmp_path))
    blob = tmp_path / "model.pt"
    blob.write_bytes(b"\x80\x02\xff\xfe" * 16)
    with pytest.raises(ConfigError, match="is not a text file"):
        load_config(str(blob))


def test_yaml_aliases_are_refused(tmp_path):
    """Nested aliases expand exponentially when the config is printed or copied (a YAML bomb)."""
    path = tmp_path / "c.yaml"
    path.write_text("train: &t {epochs: 2}\noptim: *t\n")
    with pytest.raises(ConfigError, match=r"aliases \(\*t\) are not allowed"):
        load_config(str(path))
