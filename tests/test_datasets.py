"""data.datasets' training transforms: one-hot targets and mixup."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data.datasets import mixup, soft_targets


def _batches(n_batches: int = 3, batch: int = 5, frames: int = 7, size: int = 4):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_batches * batch, frames, size)).astype(np.float32)
    y = rng.integers(0, 3, n_batches * batch).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch), x, y


def test_soft_targets_are_one_hot():
    ds, x, y = _batches()
    got_x, got_y = (np.concatenate(parts) for parts in zip(*soft_targets(ds, 3), strict=True))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, np.eye(3)[y])


def test_mixup_blends_each_clip_with_its_partner_by_the_label_weight():
    ds, x, y = _batches()
    batches = list(mixup(ds, 3, alpha=0.4, seed=7))
    weights = []
    for b, (mixed_x, mixed_y) in enumerate(batches):
        xb, yb = x[b * 5 : (b + 1) * 5], np.eye(3)[y[b * 5 : (b + 1) * 5]]
        mixed_x, mixed_y = mixed_x.numpy(), mixed_y.numpy()
        np.testing.assert_allclose(mixed_y.sum(axis=1), 1.0, atol=1e-6)
        for i in range(5):
            j = 4 - i  # the partner: the batch reversed
            if y[b * 5 + i] == y[b * 5 + j]:  # same class: the labels do not show the weight
                continue
            w = mixed_y[i] @ yb[i]  # the weight of clip i: its own label's share
            assert 0.5 <= w <= 1.0
            np.testing.assert_allclose(mixed_x[i], w * xb[i] + (1 - w) * xb[j], atol=1e-5)
            weights.append(w)
    assert len(weights) >= 4
    assert np.std(weights) > 0.01  # drawn per clip, not one weight for all
    again = list(mixup(ds, 3, alpha=0.4, seed=7))
    other = list(mixup(ds, 3, alpha=0.4, seed=8))
    for (a, _), (b, _) in zip(batches, again, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # repeatable for a seed
    pairs = zip(batches, other, strict=True)
    assert any(not np.array_equal(a.numpy(), c.numpy()) for (a, _), (c, _) in pairs)
    mixed = mixup(ds, 3, alpha=0.4, seed=7)
    first, second = ([t.numpy() for _, t in mixed] for _ in range(2))  # two epochs
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert mixed.cardinality().numpy() == ds.cardinality().numpy() == 3


def test_mixup_keeps_the_dominant_clips_length():
    """Padding (zero rows) is never blended in: the dominant clip's padding stays padding, and
    where only its partner is padding the dominant clip's frames stay as they are."""
    x = np.ones((2, 6, 2), np.float32)
    x[0] *= 3.0
    x[1] *= -5.0
    x[0, 4:] = 0.0  # clip 0 is 4 frames long, clip 1 six
    ds = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1], np.int32))).batch(2)
    mixed_x, mixed_y = (t.numpy() for t in next(iter(mixup(ds, 2, alpha=0.4, seed=0))))
    w = mixed_y[:, 0] * [1, 0] + mixed_y[:, 1] * [0, 1]  # each clip's own weight
    np.testing.assert_allclose(mixed_x[0, :4], w[0] * 3.0 + (1 - w[0]) * -5.0, rtol=1e-6)
    np.testing.assert_array_equal(mixed_x[0, 4:], 0.0)  # clip 0's padding
    np.testing.assert_allclose(mixed_x[1, :4], w[1] * -5.0 + (1 - w[1]) * 3.0, rtol=1e-6)
    np.testing.assert_array_equal(mixed_x[1, 4:], -5.0)  # its partner's padding: its own frames


def test_mixup_refuses_a_non_positive_alpha():
    from data.checks import ConfigError
    from models.classifier import ModelConfig

    ds, _, _ = _batches()
    with pytest.raises(ValueError, match="alpha must be > 0; received 0.0"):
        mixup(ds, 3, alpha=0.0)
    with pytest.raises(ConfigError, match="model.mixup_alpha"):
        ModelConfig(mixup_alpha=-0.2)
    with pytest.raises(ConfigError, match="model.label_smoothing"):
        ModelConfig(label_smoothing=1.0)
