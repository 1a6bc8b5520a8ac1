"""Fashion-MNIST prepared by tfds, offline, from Debian's ``dataset-fashion-mnist`` files.

    python -m ddad_jax.data.prepare fashion_mnist [--data_dir=...]

writes the tfds dataset ``fashion_mnist_offline`` (array_record files, readable with
``tfds.data_source`` and no TensorFlow) from the IDX files in
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
"""

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from ddad_jax.data import classes

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
NAME = "fashion_mnist_offline"
CLASS_NAMES = classes.FASHION_MNIST
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: str) -> np.ndarray:
    """Reads a (gzipped) IDX file of unsigned bytes into an array of its stated shape."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def source_files(source_dir: str):
    return [os.path.join(source_dir, f) for pair in _FILES.values() for f in pair]


class FashionMnistOffline(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Xiao et al., 2017) from local IDX files."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, source_dir: str = DEFAULT_SOURCE_DIR, **kwargs):
        self._source_dir = source_dir
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                # Tensor, not Image: writing PNG-encoded Images needs TensorFlow.
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        return {split: self._generate_examples(*(os.path.join(self._source_dir, f) for f in files))
                for split, files in _FILES.items()}

    def _generate_examples(self, images_path, labels_path):
        images, labels = read_idx(images_path), read_idx(labels_path)
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image[..., None], "label": int(label)}
