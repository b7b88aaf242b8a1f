"""Whole-space checks of a parsed search space: every `when` can hold, every combination is a valid config.

The walk visits every assignment of the choice/const parameters (numeric
parameters do not decide conditions: a `when` may only name choice/const
parameters or base/fixed values). For each assignment it builds the config
twice, with every active numeric parameter at its low bound and then at its
high bound (the largest value the sampler can draw), so a cross-field rule
broken at either end is found before Ray starts.

The walk itself is complete up to MAX_WALK assignments (cheap: no configs);
configs are built for the first MAX_COMBINATIONS of them, and a space larger
than that is reported (logged) as partly checked, never silently.
"""

from __future__ import annotations

import logging
import math
import typing
from typing import Any

from ganray.config import ConfigError

log = logging.getLogger("ganray.tune")

MAX_COMBINATIONS = 4096  # assignments whose configs are built (2 configs each)
MAX_WALK = 200_000  # assignments walked to prove every `when` can hold (~1 s)

Lookup = typing.Callable[[str], Any]


class Leaf(typing.NamedTuple):
    values: dict[str, Any]  # choice/const config key -> value
    numeric: list[Any]  # the active numeric Params
    active: set[str]  # keys (param names) of every active Param


def top_value(p: Any) -> Any:
    """The largest value ``p`` can be sampled at (``high``, or the last step at or below it)."""
    if not p.step:
        return p.high
    top = p.low + math.floor((p.high - p.low) / p.step + 1e-9) * p.step
    return int(top) if p.type == "int" else top


def walk(
    space: Any, lookup_for: typing.Callable[[dict[str, Any]], Lookup], fail: Any
) -> typing.Iterator[Leaf]:
    """Every assignment of the choice/const parameters, in file order."""
    params = space.params

    def rec(i: int, values: dict[str, Any], numeric: list[Any], active: list[str]) -> typing.Iterator[Leaf]:
        if i == len(params):
            yield Leaf(dict(values), list(numeric), set(active))
            return
        p = params[i]
        if not p.active(lookup_for(values)):
            yield from rec(i + 1, values, numeric, active)
            return
        if p.config_key in values or any(q.config_key == p.config_key for q in numeric):
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            fail(
                f"search.{p.key}",
                f"two variants of {p.config_key} are both sampled when {shown}; "
                f"make their `when` conditions exclusive",
            )
        active.append(p.key)
        if p.type in ("choice", "const"):
            for v in p.possible():
                values[p.config_key] = v
                yield from rec(i + 1, values, numeric, active)
                del values[p.config_key]
        else:
            numeric.append(p)
            yield from rec(i + 1, values, numeric, active)
            numeric.pop()
        active.pop()

    return rec(0, {}, [], [])


def check_space(space: Any, lookup_for: typing.Callable[[dict[str, Any]], Lookup], fail: Any) -> None:
    """Fail (via ``fail(key, problem)``) on a `when` that never holds or an invalid combination."""
    reached: set[str] = set()
    built = walked = 0
    for leaf in walk(space, lookup_for, fail):
        walked += 1
        reached |= leaf.active
        if built < MAX_COMBINATIONS:
            built += 1
            _check_leaf(space, leaf, fail)
        if walked >= MAX_WALK:
            break
    complete = walked < MAX_WALK
    if complete:
        for p in space.params:
            if p.key not in reached:
                fail(f"search.{p.key}.when", f"never holds: {_why_never(p, space, lookup_for)}")
    if built < walked or not complete:
        more = f"{walked}" if complete else f"more than {walked}"
        log.warning(
            "%s: the space has %s combinations of choices; cross-field rules were checked for the "
            "first %d only (a trial with an invalid combination fails when it starts)%s",
            space.path,
            more,
            built,
            "" if complete else "; `when` conditions were checked on the first combinations only",
        )


def _check_leaf(space: Any, leaf: Leaf, fail: Any) -> None:
    for bound in ("low", "high"):
        combo = dict(leaf.values)
        for p in leaf.numeric:
            combo[p.config_key] = p.low if bound == "low" else top_value(p)
        try:
            space.trial_config(combo)
        except ConfigError as e:
            shown = ", ".join(f"{k}={v}" for k, v in leaf.values.items()) or "of the base/fixed values"
            nums = ", ".join(f"{p.config_key}={combo[p.config_key]}" for p in leaf.numeric)
            at = f" (numeric parameters at their {bound} bound: {nums})" if nums else ""
            fail("search", f"the combination {shown} is not a valid config: {e}; add a `when` condition{at}")


def _why_never(p: Any, space: Any, lookup_for: typing.Callable[[dict[str, Any]], Lookup]) -> str:
    searched = {q.config_key for q in space.params}
    base = lookup_for({})
    for key, allowed in p.when:
        if key not in searched and base(key) not in allowed:
            return (
                f"{key} is {base(key)!r} in base/fixed, not one of {list(allowed)}; "
                f"search {key} or remove this parameter"
            )
    cond = ", ".join(f"{k} in {list(a)}" for k, a in p.when)
    return f"no combination of the earlier choices gives {cond}; fix the condition or remove the parameter"
