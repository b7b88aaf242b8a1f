"""Inception Score (Salimans et al. 2016) from a backbone's logits.

IS = exp(E_x KL(p(y|x) || p(y))), averaged over splits. With the Inception
backbone the logits are its 1008 ImageNet(-ish) classes, as in the original;
with an offline classifier they are the dataset's own classes (at most
num_classes), and the score is labelled with the backbone's name.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def inception_score(logits: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """(mean, std) over ``num_splits`` equal parts of the samples."""
    num_splits = max(1, min(num_splits, len(logits)))
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    scores = []
    for part in np.array_split(logp, num_splits):
        p = np.exp(part)
        log_py = np.log(p.mean(axis=0) + 1e-30)
        kl = (p * (part - log_py)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
