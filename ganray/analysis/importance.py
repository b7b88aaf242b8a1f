"""Hyperparameter importances of a search.

The search's Optuna study lives inside Ray Tune's searcher state, so it is
rebuilt here from the table: one completed Optuna trial per evaluated ganray
trial (its searched params with the space's distributions, value = its best
FID), then Optuna's own evaluator (PED-ANOVA, Optuna's default; no scikit-learn
needed). With too few trials for that (or a space that has no numeric or
categorical params) it falls back to |Spearman rank correlation| of each
parameter with the best FID, normalised to sum to 1.
"""

from __future__ import annotations

import logging
from typing import Any

from ganray.analysis.table import Summary, finite

log = logging.getLogger("ganray.analysis")


def _distribution(spec: dict[str, Any]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = spec.get("type")
    if kind == "loguniform":
        return FloatDistribution(float(spec["low"]), float(spec["high"]), log=True)
    if kind == "uniform":
        return FloatDistribution(float(spec["low"]), float(spec["high"]), step=spec.get("step"))
    if kind == "int":
        return IntDistribution(
            int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")), step=int(spec.get("step") or 1)
        )
    if kind == "choice":
        return CategoricalDistribution(list(spec["values"]))
    return None  # const: not a searched dimension


def _fits(dist, value: Any) -> bool:
    """True if ``value`` lies in ``dist`` (a trial of an older, wider space may not)."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def rebuild_study(space: dict[str, Any], summaries: list[Summary], mode: str):
    """An Optuna study holding one completed trial per evaluated ganray trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k: d for k, spec in (space.get("search") or {}).items() if (d := _distribution(spec or {}))}
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for s in summaries:
        if s.best is None:
            continue
        params = {k: s.trial.params[k] for k in dists if k in s.trial.params}
        ok = {k: v for k, v in params.items() if _fits(dists[k], v)}
        if ok:
            study.add_trial(
                optuna.trial.create_trial(params=ok, distributions={k: dists[k] for k in ok}, value=s.best)
            )
    return study


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    for pos, i in enumerate(order):
        r[i] = float(pos)
    return r


def _spearman(x: list[float], y: list[float]) -> float:
    rx, ry = _ranks(x), _ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return 0.0 if vx == 0 or vy == 0 else cov / (vx * vy) ** 0.5


def from_table(summaries: list[Summary]) -> dict[str, float]:
    """|Spearman rho| of each searched param with the best FID (categories ranked by order seen)."""
    scored = [s for s in summaries if s.best is not None]
    keys = sorted({k for s in scored for k in s.trial.params})
    raw = {}
    for k in keys:
        pts = [(s.trial.params[k], s.best) for s in scored if k in s.trial.params]
        if len(pts) < 2:
            continue
        codes: dict[Any, int] = {}
        xs = [float(v) if finite(v) else float(codes.setdefault(str(v), len(codes))) for v, _ in pts]
        raw[k] = abs(_spearman(xs, [b for _, b in pts]))
    total = sum(raw.values())
    return {k: v / total if total else 0.0 for k, v in sorted(raw.items(), key=lambda kv: -kv[1])}


def importances(
    space: dict[str, Any] | None, summaries: list[Summary], mode: str
) -> tuple[dict[str, float], str]:
    """(param -> importance, the method used)."""
    if space and space.get("search"):
        try:
            import optuna

            study = rebuild_study(space, summaries, mode)
            if len(study.trials) >= 3:
                evaluator = optuna.importance.PedAnovaImportanceEvaluator()
                imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
                if imp:
                    return dict(imp), f"Optuna PED-ANOVA on a study rebuilt from {len(study.trials)} trials"
        except Exception as e:  # noqa: BLE001 - Optuna refuses degenerate studies in many ways
            log.info(
                "Optuna importance not available (%s: %s); computing it from the table", type(e).__name__, e
            )
    imp = from_table(summaries)
    n = sum(1 for s in summaries if s.best is not None)
    return imp, f"|Spearman rank correlation| with best FID over {n} evaluated trials, normalised"
