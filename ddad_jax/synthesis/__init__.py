"""How synthetic images are made and kept.

* ``latents``: a generator's inputs (noise, and one-hot classes for a conditional generator);
* ``pool``: the past syntheses the student samples from;
* the inversion methods' synthesisers, one module each, each optimising what makes a batch
  for a few inner steps (``inner.optimize``): ``pixels`` (DeepInversion), ``reinit_generator``
  (CMI), ``meta_generator`` (Fast); ``SYNTHESIZERS`` names them.

DDAD's own generator is trained by its generator step (``methods/ddad.py``), not here.
"""

from ddad_jax.synthesis.latents import draw_latents, with_classes
from ddad_jax.synthesis.pool import POOL_SPEC, Pool, add, draw_slots, from_pixels, init_pool, sample, to_pixels

__all__ = ["POOL_SPEC", "Pool", "add", "draw_latents", "draw_slots", "from_pixels", "init_pool", "sample",
           "to_pixels", "with_classes"]
