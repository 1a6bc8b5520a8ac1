"""ddad_jax: data-free model compression (DDAD and friends) in JAX/Flax."""

__version__ = "0.1.0"
