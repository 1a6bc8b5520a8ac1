"""Image augmentations as pure functions of their random parameters (NHWC batches).

The parameters are drawn separately from the images (``draw``), so a data-parallel caller
can draw them once for the global batch and hand each replica its part: results then do
not depend on the device count. Used by supervised teacher training (random crop + flip)
and available to KD objectives on real or synthetic images (flip, shift, mixup; the teacher
labels the augmented images, so no augmentation has to preserve the class).
"""

import dataclasses
from typing import Dict, Optional

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Augment:
    flip: bool = False  # horizontal flip with probability 1/2
    shift: int = 0  # random translation by up to this many pixels (edge-padded crop)
    mixup_alpha: float = 0.0  # > 0: mix each image with another of the batch, weight ~ Beta(a, a)
    pad_mode: str = "edge"  # how the shifted-in border is filled ('constant' = zeros)

    @property
    def active(self) -> bool:
        return bool(self.flip or self.shift or self.mixup_alpha)


def flip(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Flips left-right the images whose ``mask`` (batch,) is true."""
    return jnp.where(mask[:, None, None, None], x[:, :, ::-1], x)


def shift(x: jnp.ndarray, offsets: jnp.ndarray, pad: int, mode: str = "edge") -> jnp.ndarray:
    """Pads by ``pad`` and crops back at ``offsets`` (batch, 2) in [0, 2 * pad]: offset
    ``pad`` is the identity, 0 moves the image down/right by ``pad`` pixels."""
    _, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, offsets)


def mixup(x: jnp.ndarray, partner: jnp.ndarray, lam: jnp.ndarray) -> jnp.ndarray:
    """``lam * x + (1 - lam) * partner`` per example (``lam`` of shape (batch,))."""
    lam = lam.astype(x.dtype)[:, None, None, None]
    return lam * x + (1 - lam) * partner


def draw(rng, aug: Augment, shape) -> Optional[Dict[str, jnp.ndarray]]:
    """Random parameters for batches of leading ``shape`` (e.g. (steps, global_batch));
    None when ``aug`` does nothing. ``partner`` indexes the last axis of ``shape``."""
    if not aug.active:
        return None
    k_flip, k_shift, k_partner, k_lam = jax.random.split(rng, 4)
    params = {}
    if aug.flip:
        params["flip"] = jax.random.bernoulli(k_flip, 0.5, shape)
    if aug.shift:
        params["offsets"] = jax.random.randint(k_shift, (*shape, 2), 0, 2 * aug.shift + 1)
    if aug.mixup_alpha:
        params["partner"] = jax.random.randint(k_partner, shape, 0, shape[-1])
        params["lam"] = jax.random.beta(k_lam, aug.mixup_alpha, aug.mixup_alpha, shape)
    return params


def apply(aug: Augment, x: jnp.ndarray, params, gather=None) -> jnp.ndarray:
    """Applies ``aug`` with drawn ``params`` (this batch's part). Mixup partners are rows,
    indexed by ``params['partner']``, of ``gather(x)`` taken after flip and shift: the
    global batch for a data-parallel caller (e.g. an ``all_gather``), by default ``x``."""
    if aug.flip:
        x = flip(x, params["flip"])
    if aug.shift:
        x = shift(x, params["offsets"], aug.shift, aug.pad_mode)
    if aug.mixup_alpha:
        pool = x if gather is None else gather(x)
        x = mixup(x, pool[params["partner"]], params["lam"])
    return x
