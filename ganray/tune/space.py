"""Search spaces as YAML: format, validation, and the Optuna define-by-run function.

A space file (tune_spaces/*.yaml) holds everything a search needs::

    description: free text
    base: dcgan                 # preset name or config file (relative to the space file or CWD)
    fixed:                      # dotted config overrides shared by every trial
      data.subset: 20000
      train.epochs: 4
      train.workers: 1          # per-trial resources: workers x cpus_per_worker CPUs
      train.cpus_per_worker: 1
      metrics.eval_every: 1     # the metric schedule
    search:                     # dotted config key -> distribution, sampled in file order
      optim.lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
      optim.name: {type: choice, values: [adam, rmsprop, sgd, nesterov]}
      optim.beta1: {type: uniform, low: 0.0, high: 0.9, when: {optim.name: [adam]}}
      train.loss: {type: const, value: hinge, when: {model.arch: [dcgan-demod]}}
    points_to_evaluate:         # tried first, in order (dotted keys of `search`)
      - {optim.name: adam, optim.lr: 2.0e-4, optim.beta1: 0.5}
    tune:
      num_samples: 8
      metric: fid               # minimized over *all* evaluated epochs of a trial
      mode: min
      max_concurrent_trials: 0  # 0 = cluster CPUs // (train.workers * train.cpus_per_worker)
      searcher: {type: optuna, sampler: tpe, seed: 0, n_startup_trials: 4}
      scheduler: {type: asha, grace_period: 1, reduction_factor: 2}   # or {type: fifo}

Distributions: ``loguniform`` / ``uniform`` (low, high; uniform takes an optional
step), ``int`` (low, high, optional step or log), ``choice`` (values) and
``const`` (value; a fixed setting that only applies under its ``when``).
``when: {key: [values]}`` makes a parameter conditional: it is sampled only if
every listed key (an earlier search parameter, or a base/fixed value) has one of
the listed values. That is how one file covers several families with their own
parameters (e.g. ``when: {model.arch: [stylegan2]}``).

Everything is validated before Ray starts: duplicate keys (anywhere in the
file), unknown keys, unknown config keys, bad distributions, values outside the
config's allowed range or choices (both bounds and each choice are checked
against ganray's Config), conditions that can never hold (also those on a
base/fixed value), points outside the space, and cross-field rules (every
combination of choices is built into a Config with the numeric parameters at
their low and at their high bound; see space_check for the size limit, which
is logged when reached). Errors name the file, the key, the problem and the
allowed values.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganray.config import Config, ConfigError, build_config, from_dict, load_yaml_text, read_yaml
from ganray.tune.space_check import check_space

TOP_KEYS = ("description", "base", "fixed", "search", "points_to_evaluate", "tune")
PARAM_KEYS = {
    "loguniform": {"low", "high"},
    "uniform": {"low", "high", "step"},
    "int": {"low", "high", "step", "log"},
    "choice": {"values"},
    "const": {"value"},
}
TUNE_KEYS = ("num_samples", "metric", "mode", "max_concurrent_trials", "searcher", "scheduler")
# Metrics a trial reports on evaluation epochs, and the config switch that turns each on.
METRICS = {"fid": "metrics.fid", "kid": "metrics.kid"}
SEARCHERS = {"optuna": {"type", "sampler", "seed", "n_startup_trials", "multivariate", "group"}}
SAMPLERS = ("tpe", "random")
SCHEDULERS = {"asha": {"type", "grace_period", "reduction_factor", "max_t", "brackets"}, "fifo": {"type"}}
# Settings every trial must share: resources (concurrency is computed from them),
# the data and the metric (or FIDs are not comparable), the epoch budget and
# evaluation cadence (ASHA's rungs sit on evaluation epochs), storage (the driver's).
NOT_SEARCHABLE = {
    "storage.": "storage is set by the command line (--storage, --endpoint-url)",
    "data.": "all trials must train and be scored on the same data",
    "metrics.": "all trials must be scored the same way for their metrics to compare",
    "train.epochs": "ASHA's budget (max_t) is the epoch count; set it in fixed",
    "train.workers": "per-trial resources must be fixed; set them in fixed",
    "train.cpus_per_worker": "per-trial resources must be fixed; set them in fixed",
    "train.use_gpu": "per-trial resources must be fixed; set them in fixed",
    "train.seed": "set it in fixed (the searcher's seed is tune.searcher.seed)",
}


class SpaceError(ConfigError):
    """A search-space file is malformed; the message names the key and the problem."""


@dataclass(frozen=True)
class Param:
    """One searched (or conditionally fixed) config key."""

    key: str  # the parameter's name (Optuna's too): a dotted config key, optionally "key#variant"
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    values: tuple = ()
    value: Any = None
    when: tuple[tuple[str, tuple], ...] = ()  # ((dotted key, allowed values), ...)

    @property
    def config_key(self) -> str:
        return self.key.partition("#")[0]

    def active(self, lookup: typing.Callable[[str], Any]) -> bool:
        return all(lookup(k) in allowed for k, allowed in self.when)

    def possible(self) -> tuple:
        """The values this parameter can take (bounds for numeric ones)."""
        if self.type == "choice":
            return self.values
        if self.type == "const":
            return (self.value,)
        return (self.low, self.high)

    def contains(self, v: Any) -> bool:
        if self.type in ("choice", "const"):
            return any(_same(v, x) for x in self.possible())
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if self.type == "int" and not float(v).is_integer():
            return False
        return self.low <= v <= self.high

    def suggest(self, trial: Any) -> Any:
        if self.type == "loguniform":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        if self.type == "uniform":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        if self.type == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        return self.value


@dataclass
class TuneSettings:
    """The ``tune:`` section, with defaults filled in."""

    num_samples: int = 8
    metric: str = "fid"
    mode: str = "min"
    max_concurrent_trials: int = 0
    searcher: dict[str, Any] = field(default_factory=lambda: {"type": "optuna", "sampler": "tpe", "seed": 0})
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "fifo"})

    @property
    def report_metric(self) -> str:
        """What Tune, Optuna and ASHA see: the running best of ``metric`` (see driver)."""
        return f"best_{self.metric}"


@dataclass
class Space:
    """A validated search space."""

    name: str  # the file's stem; the default experiment name
    path: str
    base: str
    fixed: dict[str, Any]
    params: list[Param]
    points: list[dict[str, Any]]
    tune: TuneSettings
    base_config: dict[str, Any]  # base + fixed, nested, validated
    description: str = ""

    def trial_config(self, sampled: dict[str, Any], storage: dict[str, Any] | None = None) -> Config:
        """base + fixed + sampled params (+ storage settings) as a validated Config."""
        data = copy.deepcopy(self.base_config)
        for name, v in sampled.items():
            _set_dotted(data, name.partition("#")[0], v)
        if storage:
            data["storage"] = {**data.get("storage", {}), **storage}
        return build_config(data)

    def define_by_run(self) -> DefineByRun:
        return DefineByRun(self.params, self.base_config)

    def to_dict(self) -> dict[str, Any]:
        """The resolved space (base expanded), as stored beside an experiment."""
        return {
            "description": self.description,
            "base": self.base,
            "base_config": self.base_config,
            "fixed": self.fixed,
            "search": {p.key: _param_to_dict(p) for p in self.params},
            "points_to_evaluate": self.points,
            "tune": dataclasses.asdict(self.tune),
        }


class DefineByRun:
    """Optuna define-by-run space: samples the active parameters in file order.

    Returns the ``const`` settings (Optuna does not sample them) so OptunaSearch
    adds them to the trial's config. A top-level class, so it pickles with the
    searcher's state for Tuner.restore.
    """

    def __init__(self, params: list[Param], base_config: dict[str, Any]) -> None:
        self.params = list(params)
        self.base_config = base_config

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        values: dict[str, Any] = {}
        consts: dict[str, Any] = {}
        lookup = _lookup(self.base_config, values)
        for p in self.params:
            if not p.active(lookup):
                continue
            values[p.config_key] = p.suggest(trial)
            if p.type == "const":
                consts[p.key] = p.value
        return consts or None


# ---------------------------------------------------------------- loading


def load_space(path: str, overrides: list[str] | None = None, num_samples: int | None = None) -> Space:
    """Read and validate a space file; ``overrides`` (key=value) extend its ``fixed`` section."""
    p = Path(path)
    where = str(p)
    if p.is_dir():
        raise SpaceError(f"{where} is a folder; pass a search-space file (see tune_spaces/)")
    if not p.is_file():
        raise SpaceError(f"{where}: no such search-space file")
    try:
        raw = read_yaml(str(p))
    except ConfigError as e:
        raise SpaceError(str(e)) from None
    return parse_space(raw, name=p.stem, path=where, overrides=overrides, num_samples=num_samples)


def parse_space(
    raw: dict[str, Any],
    name: str = "space",
    path: str = "<space>",
    overrides: list[str] | None = None,
    num_samples: int | None = None,
) -> Space:
    """Validate a space given as a dict (see the module docstring for the format)."""
    err = _Errors(path)
    if not isinstance(raw, dict):
        err.fail("", "expected a mapping at the top level")
    _check_keys(err, "", raw, TOP_KEYS)
    base = raw.get("base", "")
    if not isinstance(base, str) or not base:
        err.fail("base", f"expected a preset name or a config file, got {base!r}")
    base_data = _read_base(err, base, Path(path).parent)
    fixed = dict(_mapping(err, "fixed", raw.get("fixed")))
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            err.fail(f"--set {item}", "expected key=value, e.g. train.epochs=2")
        fixed[key.strip()] = _yaml_scalar(text.strip())
    base_config = _apply_fixed(err, base_data, fixed)
    params = _parse_search(err, raw.get("search"), set(fixed))
    tune = _parse_tune(err, raw.get("tune"), base_config, num_samples)
    points = _parse_points(err, raw.get("points_to_evaluate"), params, base_config)
    space = Space(
        name=name,
        path=path,
        base=base,
        fixed=fixed,
        params=params,
        points=points,
        tune=tune,
        base_config=base_config,
        description=_description(err, raw.get("description", "")),
    )
    _check_combinations(err, space)
    return space


def _description(err: _Errors, text: Any) -> str:
    if not isinstance(text, str):
        err.fail("description", f"expected text, got {type(text).__name__}")
    return text


class _Errors:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> typing.NoReturn:
        where = f"{self.path}: {key}" if key else self.path
        raise SpaceError(f"{where}: {problem}")


def _check_keys(err: _Errors, where: str, data: dict[str, Any], allowed: typing.Iterable[str]) -> None:
    allowed = sorted(allowed)
    for k in data:
        if k not in allowed:
            err.fail(f"{where}.{k}" if where else str(k), f"unknown key; allowed keys: {', '.join(allowed)}")


def _mapping(err: _Errors, where: str, data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        err.fail(where, f"expected a mapping, got {type(data).__name__}")
    return data


def _yaml_scalar(text: str) -> Any:
    return load_yaml_text(text, "--set") if text else ""


def _read_base(err: _Errors, base: str, space_dir: Path) -> dict[str, Any]:
    candidate = space_dir / base
    target = str(candidate) if candidate.is_file() else base
    try:
        return read_yaml(target)
    except ConfigError as e:
        err.fail("base", str(e))


def _config_field(key: str) -> tuple[dataclasses.Field, Any] | None:
    """The dataclass field and type of a dotted key (``section.name``, or deeper for nested
    sections such as ``model.stylegan2.fmap_max``), or None."""
    *path, name = key.split(".")
    cls: Any = Config
    for part in path:
        hints = typing.get_type_hints(cls)
        cls = hints.get(part)
        if cls is None or not dataclasses.is_dataclass(cls):
            return None
    if not path or not name:
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields or dataclasses.is_dataclass(typing.get_type_hints(cls)[name]):
        return None
    return fields[name], typing.get_type_hints(cls)[name]


def _default(key: str) -> Any:
    obj: Any = Config()
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _check_config_key(err: _Errors, where: str, key: str) -> None:
    if not isinstance(key, str) or _config_field(key) is None:
        section = str(key).partition(".")[0]
        hints = typing.get_type_hints(Config)
        if section in hints:
            names = ", ".join(f.name for f in dataclasses.fields(hints[section]))
            err.fail(where, f"{key!r} is not a config key; {section} has: {names}")
        err.fail(where, f"{key!r} is not a config key; sections: {', '.join(hints)} (use section.name)")


def _check_value(err: _Errors, where: str, key: str, value: Any) -> Any:
    """Check one value against the config field's rules; return it coerced."""
    nested: dict[str, Any] = {}
    _set_dotted(nested, key, value)
    try:
        obj = from_dict(Config, nested)
    except ConfigError as e:
        err.fail(where, str(e))
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``key`` 'a.b.c' (sections may nest: model.stylegan2.fmap_max)."""
    *path, name = key.split(".")
    for part in path:
        data = data.setdefault(part, {})
    data[name] = value


def _get_dotted(data: dict[str, Any], key: str) -> Any:
    """``data[a][b][c]`` for 'a.b.c', or the Config default where ``data`` has no value."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _default(key)
        node = node[part]
    return node


def _apply_fixed(err: _Errors, base_data: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base_data)
    for key, v in fixed.items():
        _check_config_key(err, f"fixed.{key}", key)
        if key.startswith("storage."):
            err.fail(f"fixed.{key}", NOT_SEARCHABLE["storage."])
        _set_dotted(data, key, _check_value(err, f"fixed.{key}", key, v))
    try:
        cfg = build_config(data)
    except ConfigError as e:
        err.fail("fixed", f"base + fixed is not a valid config: {e}")
    out = cfg.to_dict()
    out.pop("storage")
    return out


def _number(err: _Errors, where: str, v: Any, integer: bool = False) -> float | int:
    if isinstance(v, str):  # YAML 1.1 reads 2e-4 as a string
        try:
            v = float(v)
        except ValueError:
            err.fail(where, f"expected a number, got {v!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        err.fail(where, f"expected a finite number, got {v!r}")
    if integer:
        if not float(v).is_integer():
            err.fail(where, f"expected an integer, got {v!r}")
        return int(v)
    return float(v)


def _parse_param(err: _Errors, key: str, spec: Any, known: dict[str, list[Param]], later: set[str]) -> Param:
    where = f"search.{key}"
    name, key = key, key.partition("#")[0]
    _check_config_key(err, where, key)
    for prefix, why in NOT_SEARCHABLE.items():
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            err.fail(where, f"cannot be searched: {why}")
    spec = _mapping(err, where, spec)
    typ = spec.get("type")
    if typ not in PARAM_KEYS:
        err.fail(f"{where}.type", f"{typ!r} is not a distribution; choose one of: {', '.join(PARAM_KEYS)}")
    _, ftype = _config_field(key)
    if typ in ("loguniform", "uniform", "int") and ftype not in (int, float):
        err.fail(f"{where}.type", f"{typ} needs a numeric config key; {key} is {ftype.__name__} (use choice)")
    if typ == "int" and ftype is not int:
        err.fail(f"{where}.type", f"{key} is a float; use uniform or loguniform")
    _check_keys(err, where, spec, PARAM_KEYS[typ] | {"type", "when"})
    kw: dict[str, Any] = {"key": name, "type": typ}
    if typ in ("loguniform", "uniform", "int"):
        for b in ("low", "high"):
            if b not in spec:
                err.fail(where, f"{typ} needs {b}")
            kw[b] = _number(err, f"{where}.{b}", spec[b], integer=typ == "int")
        if kw["low"] >= kw["high"]:
            err.fail(where, f"low ({kw['low']}) must be < high ({kw['high']})")
        if (typ == "loguniform" or spec.get("log")) and kw["low"] <= 0:
            err.fail(f"{where}.low", f"must be > 0 for a log scale, got {kw['low']}")
        if "step" in spec:
            kw["step"] = _number(err, f"{where}.step", spec["step"], integer=typ == "int")
            if kw["step"] <= 0:
                err.fail(f"{where}.step", f"must be > 0, got {kw['step']}")
        if "log" in spec:
            if not isinstance(spec["log"], bool):
                err.fail(f"{where}.log", f"expected true or false, got {spec['log']!r}")
            if spec["log"] and "step" in spec:
                err.fail(where, "log and step cannot be combined")
            kw["log"] = spec["log"]
        for b in ("low", "high"):
            _check_value(err, f"{where}.{b}", key, kw[b])
    elif typ == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            err.fail(f"{where}.values", f"expected a non-empty list, got {values!r}")
        if len({repr(v) for v in values}) != len(values):
            err.fail(f"{where}.values", f"values repeat: {values}")
        coerced = []
        for v in values:
            if not isinstance(v, (str, int, float, bool)) or v is None:
                err.fail(f"{where}.values", f"{v!r} is not a number, string or boolean")
            coerced.append(_check_value(err, f"{where}.values", key, v))
        kw["values"] = tuple(coerced)
    else:
        if "value" not in spec:
            err.fail(where, "const needs value")
        kw["value"] = _check_value(err, f"{where}.value", key, spec["value"])
    kw["when"] = _parse_when(err, where, spec.get("when"), known, later)
    return Param(**kw)


def _parse_when(
    err: _Errors, where: str, when: Any, known: dict[str, list[Param]], later: set[str]
) -> tuple[tuple[str, tuple], ...]:
    out = []
    for ck, allowed in _mapping(err, f"{where}.when", when).items():
        cw = f"{where}.when.{ck}"
        _check_config_key(err, cw, ck)
        if not isinstance(allowed, list) or not allowed:
            err.fail(cw, f"expected a non-empty list of values, got {allowed!r}")
        allowed = tuple(_check_value(err, cw, ck, v) for v in allowed)
        if ck in known:
            deps = known[ck]
            for dep in deps:
                if dep.type not in ("choice", "const"):
                    err.fail(cw, f"conditions need a choice or const parameter; {dep.key} is {dep.type}")
            possible = [v for dep in deps for v in dep.possible()]
            never = [v for v in allowed if not any(_same(v, x) for x in possible)]
            if never:
                err.fail(cw, f"{never[0]!r} is never sampled; {ck} takes: {possible}")
        elif ck in later:
            err.fail(cw, f"{ck} is searched after this parameter; conditions are evaluated in file order")
        # Otherwise the condition reads the base/fixed value; space_check fails
        # when that value (or the earlier choices) can never satisfy it.
        out.append((ck, allowed))
    return tuple(out)


def _parse_search(err: _Errors, search: Any, fixed_keys: set[str]) -> list[Param]:
    search = _mapping(err, "search", search)
    if not search:
        err.fail("search", "is empty; give at least one parameter to search")
    known: dict[str, list[Param]] = {}  # config key -> its variants (conditions read config keys)
    params = []
    keys = [str(k).partition("#")[0] for k in search]
    for i, (name, spec) in enumerate(search.items()):
        key = keys[i]
        if key in fixed_keys:
            err.fail(
                f"search.{name}", "is also set in fixed (or by --set); a key is either fixed or searched"
            )
        later = set(keys[i + 1 :]) - {key}
        p = _parse_param(err, str(name), spec, known, later)
        for prev in known.get(key, []):
            if not prev.when or not p.when:
                err.fail(
                    f"search.{name}",
                    f"{key} is searched twice; variants (key#name) each need a `when` condition",
                )
        known.setdefault(key, []).append(p)
        params.append(p)
    return params


def _int_setting(err: _Errors, where: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        err.fail(where, f"expected an integer >= {low}, got {v!r}")
    return v


def _parse_tune(err: _Errors, tune: Any, base: dict[str, Any], num_samples: int | None) -> TuneSettings:
    tune = _mapping(err, "tune", tune)
    _check_keys(err, "tune", tune, TUNE_KEYS)
    s = TuneSettings()
    s.num_samples = _int_setting(err, "tune.num_samples", tune.get("num_samples", s.num_samples), 1)
    if num_samples is not None:
        s.num_samples = _int_setting(err, "--num-samples", num_samples, 1)
    s.metric = tune.get("metric", s.metric)
    if s.metric not in METRICS:
        err.fail("tune.metric", f"{s.metric!r} is not a trial metric; choose one of: {', '.join(METRICS)}")
    switch = METRICS[s.metric]
    if not _get_dotted(base, switch):
        err.fail("tune.metric", f"{s.metric} is not computed: set {switch}: true in fixed")
    s.mode = tune.get("mode", s.mode)
    if s.mode not in ("min", "max"):
        err.fail("tune.mode", f"{s.mode!r} is not allowed; choose min or max")
    s.max_concurrent_trials = _int_setting(
        err, "tune.max_concurrent_trials", tune.get("max_concurrent_trials", 0), 0
    )
    s.searcher = _parse_searcher(err, _mapping(err, "tune.searcher", tune.get("searcher")) or s.searcher)
    s.scheduler = _parse_scheduler(
        err, _mapping(err, "tune.scheduler", tune.get("scheduler")) or s.scheduler, base
    )
    return s


def _parse_searcher(err: _Errors, spec: dict[str, Any]) -> dict[str, Any]:
    typ = spec.get("type", "optuna")
    if typ not in SEARCHERS:
        err.fail("tune.searcher.type", f"{typ!r} is not supported; choose one of: {', '.join(SEARCHERS)}")
    _check_keys(err, "tune.searcher", spec, SEARCHERS[typ])
    out = {"type": typ, "sampler": spec.get("sampler", "tpe"), "seed": spec.get("seed", 0)}
    if out["sampler"] not in SAMPLERS:
        err.fail(
            "tune.searcher.sampler",
            f"{out['sampler']!r} is not supported; choose one of: {', '.join(SAMPLERS)}",
        )
    _int_setting(err, "tune.searcher.seed", out["seed"], 0)
    if "n_startup_trials" in spec:
        out["n_startup_trials"] = _int_setting(
            err, "tune.searcher.n_startup_trials", spec["n_startup_trials"], 0
        )
    for flag in ("multivariate", "group"):
        if flag in spec:
            if not isinstance(spec[flag], bool):
                err.fail(f"tune.searcher.{flag}", f"expected true or false, got {spec[flag]!r}")
            out[flag] = spec[flag]
    if out["sampler"] != "tpe" and any(k in spec for k in ("n_startup_trials", "multivariate", "group")):
        err.fail("tune.searcher", "n_startup_trials, multivariate and group apply to sampler: tpe only")
    return out


def _parse_scheduler(err: _Errors, spec: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    typ = spec.get("type", "fifo")
    if typ not in SCHEDULERS:
        err.fail("tune.scheduler.type", f"{typ!r} is not supported; choose one of: {', '.join(SCHEDULERS)}")
    _check_keys(err, "tune.scheduler", spec, SCHEDULERS[typ])
    if typ == "fifo":
        return {"type": "fifo"}
    epochs, every = base["train"]["epochs"], base["metrics"]["eval_every"]
    max_t = _int_setting(err, "tune.scheduler.max_t", spec.get("max_t", epochs), 1)
    if max_t > epochs:
        err.fail("tune.scheduler.max_t", f"{max_t} exceeds train.epochs ({epochs})")
    grace = _int_setting(err, "tune.scheduler.grace_period", spec.get("grace_period", every), 1)
    rf = _int_setting(err, "tune.scheduler.reduction_factor", spec.get("reduction_factor", 2), 2)
    brackets = _int_setting(err, "tune.scheduler.brackets", spec.get("brackets", 1), 1)
    if grace > max_t:
        err.fail("tune.scheduler.grace_period", f"{grace} exceeds max_t ({max_t})")
    # ASHA compares trials at epochs grace * rf**k; FID exists only on evaluation
    # epochs, so every rung must be one (integer rf keeps multiples multiples).
    if grace % every:
        err.fail(
            "tune.scheduler.grace_period",
            f"{grace} is not a multiple of metrics.eval_every ({every}); ASHA's rungs must be evaluation epochs",
        )
    if max_t != epochs and max_t % every:
        err.fail("tune.scheduler.max_t", f"{max_t} is not a multiple of metrics.eval_every ({every})")
    return {
        "type": "asha",
        "grace_period": grace,
        "reduction_factor": rf,
        "max_t": max_t,
        "brackets": brackets,
    }


def _parse_points(
    err: _Errors, points: Any, params: list[Param], base: dict[str, Any]
) -> list[dict[str, Any]]:
    if points is None:
        return []
    if not isinstance(points, list):
        err.fail("points_to_evaluate", f"expected a list of mappings, got {type(points).__name__}")
    by_key = {p.key: p for p in params}
    out = []
    for i, point in enumerate(points):
        where = f"points_to_evaluate[{i}]"
        point = _mapping(err, where, point)
        clean: dict[str, Any] = {}
        for key, v in point.items():
            p = by_key.get(key)
            if p is None or p.type == "const":
                searched = ", ".join(q.key for q in params if q.type != "const")
                err.fail(f"{where}.{key}", f"is not a searched parameter; searched: {searched}")
            if p.type in ("loguniform", "uniform", "int"):
                v = _number(err, f"{where}.{key}", v, integer=p.type == "int")
            if not p.contains(v):
                err.fail(f"{where}.{key}", f"{v!r} is outside the space; allowed: {_describe(p)}")
            clean[key] = v
        lookup = _lookup(base, {by_key[k].config_key: v for k, v in clean.items()})
        for key in clean:
            p = by_key[key]
            if not p.active(lookup):
                cond = ", ".join(f"{k} in {list(a)}" for k, a in p.when)
                err.fail(f"{where}.{key}", f"is not sampled in this point (needs {cond})")
        out.append(clean)
    return out


def _lookup(base: dict[str, Any], values: dict[str, Any]) -> typing.Callable[[str], Any]:
    def lookup(key: str) -> Any:
        if key in values:
            return values[key]
        return _get_dotted(base, key)

    return lookup


def _describe(p: Param) -> str:
    if p.type in ("choice", "const"):
        return ", ".join(repr(v) for v in p.possible())
    return f"[{p.low}, {p.high}] ({p.type})"


def _param_to_dict(p: Param) -> dict[str, Any]:
    d: dict[str, Any] = {"type": p.type}
    if p.type in ("loguniform", "uniform", "int"):
        d.update(low=p.low, high=p.high)
        if p.step is not None:
            d["step"] = p.step
        if p.log:
            d["log"] = True
    elif p.type == "choice":
        d["values"] = list(p.values)
    else:
        d["value"] = p.value
    if p.when:
        d["when"] = {k: list(v) for k, v in p.when}
    return d


def _check_combinations(err: _Errors, space: Space) -> None:
    """Every `when` can hold and every combination is a valid config (see space_check); points too."""
    check_space(space, lambda values: _lookup(space.base_config, values), err.fail)
    for i, point in enumerate(space.points):
        try:
            space.trial_config(point)
        except ConfigError as e:
            err.fail(f"points_to_evaluate[{i}]", f"is not a valid config: {e}")


def _same(a: Any, b: Any) -> bool:
    """Equal and both booleans or both not (YAML's true must not match a choice of 1)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)
