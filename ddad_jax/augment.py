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
    crop_area: float = 0.0  # > 0: a random resized crop of this to 100 % of the area (ratio 3/4-4/3)

    @property
    def active(self) -> bool:
        return bool(self.flip or self.shift or self.mixup_alpha or self.crop_area)


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


def resized_crop(x: jnp.ndarray, boxes: jnp.ndarray) -> jnp.ndarray:
    """Crops each image to its box (batch, 4) = (top, left, height, width) in pixels and
    resizes the crop back to the full size, bilinearly (differentiable in ``x``)."""
    _, h, w, _ = x.shape

    def one(img, box):
        scale = jnp.stack([h / box[2], w / box[3]])
        return jax.image.scale_and_translate(img, img.shape, (0, 1), scale, -box[:2] * scale,
                                             method="linear", antialias=False)
    return jax.vmap(one)(x, boxes)


def draw_boxes(rng, shape, size: int, min_area: float, ratio=(3 / 4, 4 / 3)) -> jnp.ndarray:
    """Random crop boxes ``(*shape, 4)`` for ``size`` x ``size`` images: area uniform in
    [min_area, 1] of the image, aspect ratio log-uniform in ``ratio`` (torchvision's
    RandomResizedCrop without its retries: a side longer than the image is clipped)."""
    k_area, k_ratio, k_top, k_left = jax.random.split(rng, 4)
    area = jax.random.uniform(k_area, shape, minval=min_area, maxval=1.0) * size * size
    r = jnp.exp(jax.random.uniform(k_ratio, shape, minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])))
    bw, bh = jnp.clip(jnp.sqrt(area * r), 1.0, size), jnp.clip(jnp.sqrt(area / r), 1.0, size)
    top, left = jax.random.uniform(k_top, shape) * (size - bh), jax.random.uniform(k_left, shape) * (size - bw)
    return jnp.stack([top, left, bh, bw], axis=-1)


def mixup(x: jnp.ndarray, partner: jnp.ndarray, lam: jnp.ndarray) -> jnp.ndarray:
    """``lam * x + (1 - lam) * partner`` per example (``lam`` of shape (batch,))."""
    lam = lam.astype(x.dtype)[:, None, None, None]
    return lam * x + (1 - lam) * partner


def draw(rng, aug: Augment, shape, size: int = 0) -> Optional[Dict[str, jnp.ndarray]]:
    """Random parameters for batches of leading ``shape`` (e.g. (steps, global_batch));
    None when ``aug`` does nothing. ``partner`` indexes the last axis of ``shape``;
    ``size`` (the image side) is needed by ``crop_area``."""
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
    if aug.crop_area:
        if not size:
            raise ValueError("crop_area needs the image size")
        params["boxes"] = draw_boxes(jax.random.fold_in(rng, 4), shape, size, aug.crop_area)
    return params


def apply(aug: Augment, x: jnp.ndarray, params, gather=None) -> jnp.ndarray:
    """Applies ``aug`` with drawn ``params`` (this batch's part). Mixup partners are rows,
    indexed by ``params['partner']``, of ``gather(x)`` taken after flip and shift: the
    global batch for a data-parallel caller (e.g. an ``all_gather``), by default ``x``."""
    if aug.crop_area:
        x = resized_crop(x, params["boxes"])
    if aug.flip:
        x = flip(x, params["flip"])
    if aug.shift:
        x = shift(x, params["offsets"], aug.shift, aug.pad_mode)
    if aug.mixup_alpha:
        pool = x if gather is None else gather(x)
        x = mixup(x, pool[params["partner"]], params["lam"])
    return x
