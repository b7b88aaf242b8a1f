"""Hyperparameter search: YAML search spaces, the Ray Tune driver, and its outcome.

``python -m ganray.tune --space tune_spaces/quickstart.yaml --storage DIR_OR_S3``;
see ganray.tune.space for the space format and ganray.tune.driver for the
experiment layout.
"""

from ganray.tune.space import Space, SpaceError, load_space, parse_space

__all__ = ["Space", "SpaceError", "load_space", "parse_space"]
