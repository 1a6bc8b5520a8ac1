"""HiDFD's networks besides teacher, student and generator: the GAN's discriminator, the
student's feature projector, and the classifier-sharing student that ships.

* ``Discriminator``: a small convolutional critic with three heads on one trunk -- the
  adversarial score (hinge loss), ADC-GAN's 2K-way auxiliary classifier (class ``k`` real
  = ``2k``, fake = ``2k + 1``), and a feature head regressing the teacher's penultimate
  features (HiDFD's feature integration). HiDFD's reference code uses BigGAN blocks with
  spectral normalisation at 32x32; this trunk is DCGAN-sized for a CPU.
* ``Projector``: the student's penultimate features -> the teacher's feature width.
* ``ClassifierSharing``: student backbone -> projector -> the *teacher's* classifier: what
  HiDFD's student is at test time (the teacher's head is copied in, not trained).

And CMI's ``ContrastHead``: instance features -> points on the unit sphere.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class Discriminator(nn.Module):
    num_classes: int = 10
    feature_dim: int = 84  # the teacher's penultimate width
    width: int = 32

    @nn.compact
    def __call__(self, x: jnp.ndarray):
        """(adversarial score (batch,), auxiliary logits (batch, 2K), features (batch, feature_dim))."""
        for i, mult in enumerate((1, 2, 4)):
            x = nn.Conv(self.width * mult, (4, 4), strides=2, padding=1, name=f"Conv_{i}")(x)
            x = nn.leaky_relu(x, 0.2)
        h = x.reshape((x.shape[0], -1))
        adversarial = nn.Dense(1, name="adversarial")(h)[:, 0]
        auxiliary = nn.Dense(2 * self.num_classes, name="auxiliary")(h)
        f = nn.leaky_relu(nn.Dense(4 * self.width, name="feature_hidden")(h), 0.2)
        return adversarial, auxiliary, nn.Dense(self.feature_dim, name="feature")(f)


class Projector(nn.Module):
    """Two layers, ReLU after each: the teacher's penultimate features are post-ReLU too."""
    features: int
    hidden: int = 0  # 0 = features

    @nn.compact
    def __call__(self, f: jnp.ndarray) -> jnp.ndarray:
        f = nn.relu(nn.Dense(self.hidden or self.features, name="Dense_0")(f))
        return nn.relu(nn.Dense(self.features, name="Dense_1")(f))


class ClassifierSharing(nn.Module):
    """``head(projector(backbone(x)))``; parameters ``backbone`` (the student's),
    ``projector`` and ``teacher_head`` (the teacher's last Dense layer)."""
    backbone: nn.Module  # a classifier with penultimate=True
    projector: Projector
    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        f = self.projector(self.backbone(x, train))
        return nn.Dense(self.num_classes, name="teacher_head")(f).astype(jnp.float32)


class ContrastHead(nn.Module):
    """CMI's projection head: Dense(D) -> ReLU -> Dense(features), L2-normalised (its input
    width D is the instance features' own)."""
    features: int = 256

    @nn.compact
    def __call__(self, f: jnp.ndarray) -> jnp.ndarray:
        h = nn.relu(nn.Dense(f.shape[-1], name="Dense_0")(f))
        z = nn.Dense(self.features, name="Dense_1")(h)
        return z * jax.lax.rsqrt(jnp.sum(jnp.square(z), axis=-1, keepdims=True) + 1e-12)
