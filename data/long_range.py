"""A long-range dependency task generated in code: classify by the first token of a noisy sequence.

Each sequence has ``length`` steps of 2 features. At step 0 the second feature carries the class
(+1 or -1); everywhere else both features are Gaussian noise and the second feature is 0. A model
must carry one bit from the first step to the last, through ``length - 1`` steps of distraction:
exactly what vanishing gradients make hard.
"""

from __future__ import annotations

import numpy as np


def first_token_task(
    n: int, length: int, seed: int, noise: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Generates ``n`` sequences ``[n, length, 2]`` (float32) and their labels ``[n]`` (0 or 1).

    Example:
        >>> x, y = first_token_task(4, 10, seed=0)
        >>> x.shape, y.shape, bool(np.all((x[:, 0, 1] > 0) == (y == 1)))
        ((4, 10, 2), (4,), True)
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    x = np.zeros((n, length, 2), np.float32)
    x[:, :, 0] = noise * rng.standard_normal((n, length))
    x[:, 0, 1] = np.where(labels == 1, 1.0, -1.0)
    return x, labels.astype(np.int32)
