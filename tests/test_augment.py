"""Augmentations against hand-computed results, and their use in the DDAD student step."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddad_jax import augment


def _images(b=3, h=4, w=5, c=2):
    return jnp.arange(b * h * w * c, dtype=jnp.float32).reshape(b, h, w, c)


def test_flip_mirrors_only_the_masked_images():
    x = _images()
    out = augment.flip(x, jnp.array([True, False, True]))
    np.testing.assert_array_equal(out[0], np.asarray(x[0])[:, ::-1])
    np.testing.assert_array_equal(out[1], x[1])
    np.testing.assert_array_equal(out[2, 1, 0], x[2, 1, 4])


@pytest.mark.parametrize("mode", ["edge", "constant"])
def test_shift_is_a_padded_crop(mode):
    x = _images()
    pad = 2
    offsets = jnp.array([[2, 2], [0, 4], [1, 3]])
    out = augment.shift(x, offsets, pad, mode)
    padded = np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
    for i, (oy, ox) in enumerate(np.asarray(offsets)):
        np.testing.assert_array_equal(out[i], padded[i, oy:oy + 4, ox:ox + 5])
    np.testing.assert_array_equal(out[0], x[0])  # offset == pad: identity
    # offset (0, 4): content moves down by 2 and left by 2; edge rows/columns fill in
    np.testing.assert_array_equal(out[1, 2:, :3], x[1, :2, 2:])


def test_mixup_weights_each_example():
    x, partner = jnp.ones((2, 1, 1, 1)), jnp.zeros((2, 1, 1, 1))
    out = augment.mixup(x, partner, jnp.array([0.25, 1.0]))
    np.testing.assert_allclose(out.ravel(), [0.25, 1.0])


def test_draw_shapes_ranges_and_nothing_when_off():
    assert augment.draw(jax.random.key(0), augment.Augment(), (2, 8)) is None
    aug = augment.Augment(flip=True, shift=3, mixup_alpha=0.4)
    p = augment.draw(jax.random.key(0), aug, (2, 64))
    chex.assert_shape([p["flip"], p["partner"], p["lam"]], (2, 64))
    chex.assert_shape(p["offsets"], (2, 64, 2))
    assert p["offsets"].min() >= 0 and p["offsets"].max() <= 6 and len(np.unique(p["offsets"])) == 7
    assert p["partner"].min() >= 0 and p["partner"].max() < 64
    assert float(p["lam"].min()) >= 0 and float(p["lam"].max()) <= 1
    assert 0 < float(p["flip"].mean()) < 1


def test_apply_with_identity_parameters_is_the_identity_and_mixes_with_gathered_partners():
    x = _images(b=4)
    aug = augment.Augment(flip=True, shift=2, mixup_alpha=1.0)
    identity = {"flip": jnp.zeros(4, bool), "offsets": jnp.full((4, 2), 2),
                "partner": jnp.arange(4), "lam": jnp.full((4,), 0.5)}
    np.testing.assert_allclose(augment.apply(aug, x, identity), x)
    # partners index the gathered batch (here: a pool of 8 where row 4 + i is -x[i])
    params = {**identity, "partner": jnp.arange(4) + 4}
    out = augment.apply(aug, x, params, gather=lambda v: jnp.concatenate([v, -v]))
    np.testing.assert_allclose(out, 0 * x)
