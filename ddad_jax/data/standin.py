"""Small stand-in CIFAR and Caltech101 datasets written in the stock tfds format, for offline tests.

The files sit where ``tfds.data_source('cifar10', data_dir=...)`` looks for the real
dataset (same name, version and features, PNG-encoded images), so the CIFAR input path
is exercised end to end. The images are random; no accuracy can be read from them.
"""

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image as PILImage


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_cifar_standin(name: str, data_dir: str, train_size: int = 64, test_size: int = 32,
                        seed: int = 0) -> None:
    """Writes ``name`` ('cifar10' or 'cifar100') with random images into ``data_dir``."""
    stock = tfds.builder_cls(name)
    num_classes = 10 if name == "cifar10" else 100

    class StandIn(stock, skip_registration=True):  # pylint: disable=missing-class-docstring
        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples(train_size, 0),
                    "test": self._generate_examples(test_size, 1)}

        def _generate_examples(self, n, offset):  # pylint: disable=arguments-differ
            rng = np.random.default_rng(seed + offset)
            for i in range(n):
                example = {"id": f"{i}", "image": _png_bytes(rng.integers(0, 256, (32, 32, 3), np.uint8)),
                           "label": int(i % num_classes)}
                if name == "cifar100":
                    example["coarse_label"] = int(i % 20)
                yield i, example

    StandIn.name = name
    # Encoded bytes go straight into the Image feature: encoding arrays there needs TensorFlow.
    StandIn(data_dir=data_dir, file_format="array_record").download_and_prepare()


def write_caltech101_standin(data_dir: str, per_class: int = 4, seed: int = 0) -> None:
    """Writes tfds's ``caltech101`` (its 102 labels, background included) with ``per_class``
    random JPEG images of random sizes per label (one in its test split, the rest in train)
    into ``data_dir``: what ``python -m ddad_jax.data.prepare caltech101`` finds there after
    tfds's download."""
    stock = tfds.builder_cls("caltech101")

    class StandIn(stock, skip_registration=True):  # pylint: disable=missing-class-docstring
        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples(range(1, per_class)), "test": self._generate_examples(range(1))}

        def _generate_examples(self, indices):  # pylint: disable=arguments-differ
            rng = np.random.default_rng([seed, indices[0]])
            for label, name in enumerate(self.info.features["label"].names):
                for i in indices:
                    h, w = rng.integers(60, 200, 2)
                    mode = "L" if i == 0 else "RGB"  # Caltech101 has grayscale images too
                    image = PILImage.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).convert(mode)
                    buf = io.BytesIO()
                    image.save(buf, format="JPEG")
                    yield f"{name}/{i}", {"image": buf.getvalue(), "label": label, "image/file_name": f"{i}.jpg"}

    StandIn.name = "caltech101"
    # Encoded bytes go straight into the Image feature: encoding arrays there needs TensorFlow.
    StandIn(data_dir=data_dir, file_format="array_record").download_and_prepare()
