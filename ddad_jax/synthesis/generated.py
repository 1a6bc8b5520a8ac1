"""What the generator-based synthesisers optimise: a generator's parameters and its latents,
each by its own Adam (``reinit_generator``: CMI, ``meta_generator``: Fast)."""

import optax


def noise_shape(hp, image_shape):
    del image_shape
    return (hp.latent_dim,)


def optimizer(hp) -> optax.GradientTransformation:
    """Adam at ``synthesis_lr`` on the generator, at ``latent_lr`` on the latents (betas 0.5, 0.999)."""
    rates = {"generator": hp.synthesis_lr, "latents": hp.latent_lr}
    return optax.multi_transform({k: optax.adam(v, b1=0.5, b2=0.999) for k, v in rates.items()},
                                 {"generator": "generator", "latents": "latents"})


def start_from(generator, variables, noise):
    """``({"generator": params, "latents": noise}, params -> images)``: the generator in
    training mode with its BN statistics held at ``variables``' (its updates are dropped)."""
    batch_stats = variables.get("batch_stats", {})

    def make_images(p):
        return generator.apply({"params": p["generator"], "batch_stats": batch_stats}, p["latents"],
                               train=True, mutable=["batch_stats"])[0]

    return {"generator": variables["params"], "latents": noise}, make_images
