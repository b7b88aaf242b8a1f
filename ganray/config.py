"""Typed configuration for ganray runs.

One nested dataclass per concern (model, data, optim, schedule, train, metrics,
storage). Configs load from YAML files or from presets shipped in
``ganray/presets/``; every value is validated on load, and an error names the
dotted key, the problem and the allowed values, so a typo in a search space
fails before any trial starts.

Field metadata carries the validation rules:
``choices`` (allowed values), ``min`` / ``max`` (inclusive bounds),
``power_of_two``, ``uri`` / ``name`` (a storage URI / a single folder name)
and ``help`` (shown in errors). Numbers must be finite (NaN and inf are
refused everywhere) and integers fit in 64 bits.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ganray.config_compat import is_retired

PRESETS_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def _f(default: Any, help: str = "", **rules: Any) -> Any:
    """A dataclass field with validation rules in its metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **rules})
    return field(default=default, metadata={"help": help, **rules})


ARCHS = ("dcgan", "dcgan-mapping", "dcgan-adain", "dcgan-demod", "stylegan2", "progan", "stylegan")
OPTIMIZERS = ("adam", "rmsprop", "sgd", "nesterov")
SCHEDULERS = ("none", "step", "exponential", "cosine")
LOSSES = ("bce", "hinge", "wgan-gp")
SOURCES = ("fashion-mnist", "cifar10", "image-folder", "parquet")


@dataclass
class StyleGAN2Config:
    """The ``stylegan2`` family's own section (``model.stylegan2``); defaults follow NVlabs.

    Widths: ``channels(res) = min(2 * network_capacity * resolution // res, fmap_max)``,
    i.e. NVlabs' ``channel_base = 2 * network_capacity * resolution`` and
    ``channel_max = fmap_max`` (NVlabs' 32768 / 512 at 256 px = capacity 64).
    """

    g_arch: str = _f(
        "skip", "generator architecture (NVlabs default skip)", choices=("skip", "resnet", "orig")
    )
    d_arch: str = _f(
        "resnet", "discriminator architecture (NVlabs default resnet)", choices=("resnet", "skip", "orig")
    )
    network_capacity: int = _f(
        16, "width knob (lucidrains): channel_base = 2 * capacity * resolution", min=1, max=4096
    )
    fmap_max: int = _f(512, "largest feature-map count (NVlabs channel_max)", min=1, max=4096)
    w_dim: int = _f(512, "style vector size (0 = model.latent_dim)", min=0, max=4096)
    mapping_layers: int = _f(8, "mapping MLP depth (NVlabs 8; its cifar config 2)", min=1, max=16)
    mapping_lr_mul: float = _f(0.01, "learning-rate multiplier of the mapping network", min=1e-5, max=1.0)
    w_avg_beta: float = _f(0.995, "decay of the tracked W average used by truncation", min=0.0, max=1.0)
    mbstd_group: int = _f(
        4, "minibatch-stddev group (images); per-worker batch must be a multiple", min=1, max=64
    )
    mbstd_channels: int = _f(1, "minibatch-stddev feature maps (0 = off)", min=0, max=16)
    attn_layers: str = _f(
        "", "self-attention at these resolutions, comma-separated, e.g. '16,32' ('' = none)"
    )
    modconv: str = _f(
        "auto",
        "modulated conv path: fused (grouped), unfused (scale-conv-scale), auto",
        choices=("auto", "fused", "unfused"),
    )
    num_fp16_res: int = _f(
        4,
        "mixed precision on CUDA (NVlabs): the N highest resolutions of G and D run in fp16 "
        "(blocks of 8 px and up only; 0 = all fp32); CPU is always fp32; see train.amp",
        min=0,
        max=8,
    )
    conv_clamp: float = _f(
        256.0,
        "clamp conv outputs of G and D to +-X (NVlabs 256, guards fp16 against overflow; "
        "applied in every dtype; 0 = off)",
        min=0.0,
    )


@dataclass
class ProGANConfig:
    """The ``progan`` family's own section (``model.progan``); widths as ``model.stylegan2``'s.

    ``channels(res) = min(2 * network_capacity * resolution // res, fmap_max)``
    (Karras 2018 used fmap_base 8192 and fmap_max 512 at 1024 px).
    """

    network_capacity: int = _f(16, "width knob: channel_base = 2 * capacity * resolution", min=1, max=4096)
    fmap_max: int = _f(512, "largest feature-map count", min=1, max=4096)
    mbstd_group: int = _f(
        4, "minibatch-stddev group (images); per-worker batch must be a multiple", min=1, max=64
    )


@dataclass
class StyleGANConfig:
    """The ``stylegan`` family's own section (``model.stylegan``); defaults follow NVlabs' StyleGAN.

    Widths as ``model.progan``'s. Truncation (``truncation_psi`` on the first
    ``truncation_cutoff`` of the ``2 * log2(resolution) - 2`` styles) applies
    where images are generated for people (``ganray.generate``), never in
    training or FID, as NVlabs' ``G_style``.
    """

    network_capacity: int = _f(16, "width knob: channel_base = 2 * capacity * resolution", min=1, max=4096)
    fmap_max: int = _f(512, "largest feature-map count", min=1, max=4096)
    w_dim: int = _f(512, "style vector size (0 = model.latent_dim)", min=0, max=4096)
    mapping_layers: int = _f(8, "mapping MLP depth (NVlabs 8)", min=1, max=16)
    mapping_lr_mul: float = _f(0.01, "learning-rate multiplier of the mapping network", min=1e-5, max=1.0)
    w_avg_beta: float = _f(0.995, "decay of the tracked W average used by truncation", min=0.0, max=1.0)
    mbstd_group: int = _f(
        4, "minibatch-stddev group (images); per-worker batch must be a multiple", min=1, max=64
    )
    truncation_psi: float = _f(
        0.7,
        "generation: pull styles to the W average by psi (1 = off, 0 = the average image)",
        min=-1.0,
        max=2.0,
    )
    truncation_cutoff: int = _f(
        8, "generation: truncate styles 0..cutoff-1 (at most 2*log2(resolution)-2)", min=1, max=64
    )


@dataclass
class ModelConfig:
    """Network architecture. ``arch`` picks the registry entry in ganray.models."""

    arch: str = _f("dcgan", "generator/discriminator pair from the model registry", choices=ARCHS)
    resolution: int = _f(32, "image side in pixels", min=32, max=256, power_of_two=True)
    channels: int = _f(1, "image channels (1 grey, 3 RGB)", choices=(1, 3))
    latent_dim: int = _f(100, "size of the noise vector z", min=1, max=4096)
    ngf: int = _f(64, "generator capacity: channels of its last hidden layer", min=4, max=1024)
    ndf: int = _f(64, "discriminator capacity: channels of its first layer", min=4, max=1024)
    w_dim: int = _f(0, "size of the style vector w (0 = latent_dim)", min=0, max=4096)
    mapping_layers: int = _f(4, "depth of the Z->W mapping MLP (mapping variants)", min=1, max=8)
    spectral_norm: bool = _f(False, "spectral normalization on every discriminator layer")
    batchnorm_g: bool = _f(True, "BatchNorm in the generator (plain/mapping variants)")
    stylegan2: StyleGAN2Config = field(default_factory=StyleGAN2Config)
    progan: ProGANConfig = field(default_factory=ProGANConfig)
    stylegan: StyleGANConfig = field(default_factory=StyleGANConfig)


@dataclass
class DataConfig:
    """Where training images come from and how they are shaped."""

    source: str = _f("fashion-mnist", "dataset reader", choices=SOURCES)
    uri: str = _f("", "location of the source (path or fsspec URI); '' = the source's default", uri=True)
    resolution: int = _f(32, "images are resized/padded to this side, in pixels", min=8, max=256)
    channels: int = _f(1, "channels after conversion (1 grey, 3 RGB)", choices=(1, 3))
    subset: int = _f(0, "use only the first N training images (0 = all)", min=0)
    val_fraction: float = _f(0.05, "share of training images held out for validation", min=0.0, max=0.5)
    cache_dir: str = _f("", "local cache for remote data ('' = ~/.cache/ganray)")


@dataclass
class OptimConfig:
    """Optimizers for G and D (same kind, separate learning rates for TTUR)."""

    name: str = _f("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = _f(2e-4, "generator learning rate", min=1e-7, max=1.0)
    d_lr_ratio: float = _f(1.0, "discriminator lr = lr * d_lr_ratio (TTUR when != 1)", min=0.01, max=100.0)
    beta1: float = _f(0.5, "Adam beta1 (0.5 for DCGAN)", min=0.0, max=0.999)
    beta2: float = _f(0.999, "Adam beta2", min=0.0, max=0.9999)
    momentum: float = _f(0.9, "momentum for sgd/nesterov/rmsprop", min=0.0, max=0.999)
    weight_decay: float = _f(0.0, "L2 weight decay", min=0.0, max=1.0)
    grad_clip: float = _f(0.0, "clip gradient norm to this value (0 = off)", min=0.0)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped once per epoch."""

    name: str = _f("none", "scheduler", choices=SCHEDULERS)
    step_size: int = _f(10, "step: epochs between decays", min=1)
    gamma: float = _f(0.5, "step/exponential: multiplicative decay per step/epoch", min=0.0, max=1.0)
    min_lr_ratio: float = _f(0.0, "cosine: final lr as a fraction of the initial lr", min=0.0, max=1.0)


@dataclass
class RegConfig:
    """Lazy regularization phases (Dreg: R1, Greg: path length) and style mixing (StyleGAN2).

    Off by default (DCGAN); the stylegan2 presets set NVlabs' values. A phase
    with interval k runs every k-th step with its loss scaled by k, and its
    optimizer's lr and Adam betas are corrected by c = k / (k + 1) (NVlabs).
    """

    r1_gamma: float = _f(0.0, "R1 weight gamma on reals (0 = no Dreg phase; NVlabs 10 at 256 px)", min=0.0)
    r1_interval: int = _f(
        16, "steps between R1 phases (16 = NVlabs lazy R1; 1 = every step)", min=1, max=1000
    )
    pl_weight: float = _f(0.0, "path-length weight (0 = no Greg phase; NVlabs 2)", min=0.0)
    pl_interval: int = _f(4, "G steps between path-length phases", min=1, max=1000)
    pl_decay: float = _f(0.01, "decay of the running mean path length pl_mean", min=0.0, max=1.0)
    pl_batch_shrink: int = _f(2, "path-length batch = batch_size / shrink", min=1, max=64)
    style_mixing: float = _f(0.0, "probability of style-mixing regularization (NVlabs 0.9)", min=0.0, max=1.0)


@dataclass
class AugmentConfig:
    """DiffAugment on every image D sees, with an optional ADA-style adaptive probability."""

    policy: str = _f("", "DiffAugment ops, comma-separated: color, translation, cutout ('' = off)")
    p: float = _f(1.0, "probability of each op per image (the start value when adaptive)", min=0.0, max=1.0)
    ada_target: float = _f(
        0.0, "adapt p to keep E[sign D(real)] at this value (0 = fixed p; ADA 0.6)", min=0.0, max=1.0
    )
    ada_interval: int = _f(4, "steps between adjustments of p", min=1, max=1000)
    ada_kimg: float = _f(500.0, "thousands of images for p to move from 0 to 1", min=0.001)


@dataclass
class ProgressiveConfig:
    """Progressive growing (``train.progressive``; Karras 2018): resolution phases with fade-in.

    Phase 0 trains at ``start_resolution`` for ``stable_kimg``; each later
    phase doubles the resolution, fades the new block in over ``fade_kimg``
    (alpha 0 -> 1), then trains it for ``stable_kimg``; the last phase
    (``model.resolution``) runs until training ends. NVlabs: 600 kimg each.
    Tables map a resolution to a value, e.g. ``"4:128,8:128,16:64"``; a
    resolution missing from a table uses ``train.batch_size`` / ``optim.lr``.
    See ganray.train.progressive.
    """

    enabled: bool = _f(False, "grow from start_resolution to model.resolution (progan/stylegan)")
    start_resolution: int = _f(4, "resolution of phase 0, in pixels", choices=(4, 8))
    fade_kimg: float = _f(600.0, "thousands of images per fade-in (NVlabs 600)", min=0.0, max=1e6)
    stable_kimg: float = _f(600.0, "thousands of images per stable part (NVlabs 600)", min=0.001, max=1e6)
    batch_sizes: str = _f(
        "",
        "global batch per resolution, quoted: '4:128,8:64' ('' = batch_size; unquoted, YAML may read 8:30 as the number 510)",
    )
    lrs: str = _f("", "learning rate per resolution, quoted: '4:1e-3,32:2e-3' ('' = optim.lr)")
    reset_optimizer: bool = _f(False, "new optimizer state at the start of each phase")


@dataclass
class TrainConfig:
    """The training loop."""

    loss: str = _f("bce", "adversarial loss", choices=LOSSES)
    gp_weight: float = _f(10.0, "wgan-gp: gradient penalty weight", min=0.0)
    drift: float = _f(1e-3, "wgan-gp: drift penalty on real logits", min=0.0)
    epochs: int = _f(5, "training epochs", min=1, max=100000)
    batch_size: int = _f(128, "global batch (split across workers)", min=1, max=65536)
    d_steps: int = _f(1, "discriminator steps per generator step", min=1, max=10)
    ema_decay: float = _f(0.0, "G_ema decay per step (0 = no G_ema)", min=0.0, max=1.0)
    ema_kimg: float = _f(
        0.0, "G_ema half-life in thousands of images (overrides ema_decay when > 0)", min=0.0
    )
    ema_rampup: float = _f(
        0.0, "half-life at most images_seen * ema_rampup (0 = no ramp-up; NVlabs 0.05)", min=0.0
    )
    reg: RegConfig = field(default_factory=RegConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)
    seed: int = _f(0, "seed for weights, noise and data order (numpy's range)", min=0, max=2**32 - 1)
    grid_size: int = _f(64, "images in each sample grid", min=1, max=1024)
    keep_checkpoints: int = _f(3, "newest checkpoints kept (the best one is always kept)", min=1)
    max_steps_per_epoch: int = _f(0, "cap on steps per epoch (0 = whole dataset)", min=0)
    amp: str = _f(
        "auto",
        "mixed precision on CUDA (CPU is fp32): autocast in auto (bf16), bf16, fp16, or off; models "
        "with per-block precision (stylegan2 num_fp16_res > 0) skip autocast and run those blocks in "
        "fp16 (auto, fp16) or bf16",
        choices=("auto", "off", "bf16", "fp16"),
    )
    channels_last: bool = _f(True, "channels_last memory format on CUDA")
    workers: int = _f(1, "Ray Train workers per trial", min=1, max=1024)
    use_gpu: str = _f("auto", "auto (when the cluster has GPUs), yes, no", choices=("auto", "yes", "no"))
    cpus_per_worker: float = _f(1.0, "CPUs reserved per Ray Train worker", min=0.0, max=1024.0)
    max_failures: int = _f(2, "worker failures a trial survives (restart from checkpoint)", min=0)


@dataclass
class MetricsConfig:
    """Evaluation: FID (the search objective) and friends."""

    fid: bool = _f(True, "compute FID on evaluation epochs")
    backbone: str = _f("auto", "feature network: auto, inception or a registered offline backbone")
    inception_weights: str = _f(
        "", "URI of pt_inception-2015-12-05-6726825d.pth ('' = pytorch-fid download)", uri=True
    )
    num_samples: int = _f(10000, "generated (and reference) images per evaluation", min=2, max=1_000_000)
    eval_every: int = _f(1, "evaluate every N epochs (the last epoch always)", min=1)
    batch_size: int = _f(250, "images per feature-extraction batch", min=1, max=65536)
    kid: bool = _f(False, "also compute KID")
    pr: bool = _f(False, "also compute precision/recall")
    inception_score: bool = _f(False, "also compute the Inception Score")
    ppl: bool = _f(False, "also compute perceptual path length (mapping variants)")


@dataclass
class StorageConfig:
    """Where runs are written: a local path or an fsspec URI (s3://bucket/prefix)."""

    uri: str = _f("./ganray-runs", "root of all runs", uri="storage")
    endpoint_url: str = _f("", "S3-compatible endpoint ('' = AWS_ENDPOINT_URL or AWS)")
    region: str = _f("", "S3 region ('' = AWS_REGION/AWS_DEFAULT_REGION)")
    run_name: str = _f("", "run folder under uri ('' = derived from the config)", name=True)


@dataclass
class Config:
    """A complete run configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------- validation

INT64_MAX = 2**63 - 1


def _check_text(key: str, f: dataclasses.Field, value: str) -> None:
    """Storage URIs must be usable and names single folder names (see ganray.storage)."""
    from ganray.storage import StorageError, check_name, check_uri

    try:
        if f.metadata.get("uri") and value:
            # storage.uri must outlive the process; other URIs (data, weights) are only read.
            check_uri(value, allow_memory=f.metadata["uri"] != "storage")
        if f.metadata.get("name") and value:
            check_name(value, key)
    except StorageError as e:
        raise ConfigError(f"{key}: {e}") from None


def _check_number(key: str, value: Any, hint: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number{hint}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        raise ConfigError(f"{key}: {value!r} does not fit in 64 bits{hint}")


def _check_value(key: str, f: dataclasses.Field, value: Any, typ: Any) -> Any:
    """Coerce ``value`` to the field's type and check its rules; return it."""
    help_ = f.metadata.get("help", "")
    hint = f" ({help_})" if help_ else ""
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}{hint}")
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{key}: expected an integer, got {value!r}{hint}")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "2e-4" as a string; accept numeric strings.
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key}: expected a number, got {value!r}{hint}") from None
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{key}: {value!r} is not a finite number{hint}") from None
    elif typ is str and isinstance(value, bool) and f.metadata.get("choices"):
        # YAML 1.1 reads yes/no/on/off as booleans: map back to the choice that was meant.
        words = ("yes", "on", "true") if value else ("no", "off", "false")
        value = next((w for w in words if w in f.metadata["choices"]), value)
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected one of {', '.join(f.metadata['choices'])}, got {value!r}")
    elif typ is str and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}{hint}")
    if typ is str:
        _check_text(key, f, value)
    else:
        _check_number(key, value, hint)
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of: {allowed}")
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ConfigError(f"{key}: {value!r} is out of range; allowed {rng}{hint}")
    if f.metadata.get("power_of_two") and value & (value - 1):
        raise ConfigError(f"{key}: {value!r} must be a power of two (32, 64, 128, 256){hint}")
    return value


def from_dict(cls: type, data: dict[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, validating every key."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    # Settings removed in a later release still load (ignored, with a warning if set).
    data = {k: v for k, v in data.items() if not is_retired(f"{prefix}.{k}" if prefix else k, v)}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix or "config"
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = from_dict(typ, value, key)
        else:
            kwargs[name] = _check_value(key, fields[name], value, typ)
    obj = cls(**kwargs)
    # Defaults are validated too, so a bad default cannot slip through.
    for name, f in fields.items():
        if name not in kwargs and not dataclasses.is_dataclass(hints[name]):
            _check_value(f"{prefix}.{name}" if prefix else name, f, getattr(obj, name), hints[name])
    return obj


def _check_consistency(cfg: Config) -> None:
    """Rules that span sections."""
    if cfg.data.resolution != cfg.model.resolution:
        raise ConfigError(
            f"data.resolution ({cfg.data.resolution}) must equal model.resolution "
            f"({cfg.model.resolution}); set both to the same value"
        )
    if cfg.data.channels != cfg.model.channels:
        raise ConfigError(
            f"data.channels ({cfg.data.channels}) must equal model.channels ({cfg.model.channels})"
        )
    # Only the DCGAN family has BatchNorm in D (dropped with spectral_norm); progan/stylegan(2) have none.
    if cfg.train.loss == "wgan-gp" and cfg.model.arch.startswith("dcgan") and not cfg.model.spectral_norm:
        raise ConfigError(
            "train.loss=wgan-gp needs a discriminator without BatchNorm (the gradient penalty is "
            "per image): set model.spectral_norm=true, or use train.loss=bce or hinge"
        )
    if cfg.model.arch == "stylegan":
        from ganray.models.stylegan import check_stylegan

        check_stylegan(cfg.model)
    if cfg.train.progressive.enabled or cfg.model.arch in ("progan", "stylegan"):
        from ganray.train.progressive import check_progressive

        check_progressive(cfg)
    if cfg.train.batch_size % cfg.train.workers:
        raise ConfigError(
            f"train.batch_size ({cfg.train.batch_size}) must be divisible by train.workers "
            f"({cfg.train.workers}): each worker takes batch_size / workers images"
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key repeated in one mapping (YAML keeps the last silently)
    and aliases (``*name``: nested aliases expand exponentially, a few lines can exhaust memory)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases (*{event.anchor}) are not allowed; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first at line {seen[key].line + 1}); "
                    f"each key may appear once",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML safely, refusing duplicate keys; ConfigError naming ``where`` if invalid."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(e)}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where (PyYAML's own text spans several lines)."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else e.problem
    return " ".join(str(e).split())


def _parse_scalar(text: str) -> Any:
    return load_yaml_text(text, f"value {text!r}") if text != "" else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value, e.g. train.epochs=2")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = _parse_scalar(raw.strip())
    return data


def add_set_argument(parser: Any, help: str) -> None:
    """The ``--set KEY=VALUE`` option shared by the CLIs (collected in ``args.overrides``)."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``extra`` into a copy of ``base``."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def build_config(data: dict[str, Any] | None = None) -> Config:
    """Validate a plain dict (as read from YAML) into a Config."""
    cfg = from_dict(Config, data or {})
    _check_consistency(cfg)
    return cfg


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_yaml(path_or_preset: str) -> dict[str, Any]:
    """Read a YAML file, or a preset by name from ganray/presets/."""
    path = Path(path_or_preset)
    if not path.exists():
        preset = PRESETS_DIR / f"{path_or_preset}.yaml"
        if not preset.exists():
            raise ConfigError(
                f"config {path_or_preset!r}: no such file and no such preset; "
                f"presets: {', '.join(list_presets())}"
            )
        path = preset
    if not path.is_file():
        raise ConfigError(
            f"config {str(path)!r} is a folder, not a YAML file; pass a .yaml file or a preset name"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"config {str(path)!r} is not a text file (not UTF-8); pass a YAML config"
        ) from None
    except OSError as e:
        raise ConfigError(f"config {str(path)!r} cannot be read: {e.strerror or e}") from None
    data = load_yaml_text(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_config(path_or_preset: str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file or preset, apply dotted overrides and validate."""
    data = read_yaml(path_or_preset) if path_or_preset else {}
    return build_config(apply_overrides(data, overrides or []))
