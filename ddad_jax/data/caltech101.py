"""Caltech101 as DFAD (and DDAD after it) distil on it, made from tfds's copy.

    python -m ddad_jax.data.prepare caltech101

tfds downloads and prepares its ``caltech101`` once (this step needs network and
TensorFlow). Its images are then brought to DFAD's input and split as DFAD splits them
(``data/split_caltech101.py`` and ``dataloader.py`` of the DFAD repository):

* the 101 object classes: ``BACKGROUND_Google`` is dropped (DFAD's networks have 101 outputs);
* 20 % of each class's images for test (at least 2), drawn with a fixed seed, the rest for
  training (tfds's own split, 30 per class for training, is not used); the draw is not
  DFAD's Python ``random`` draw over its file listing, so the split is equal in proportion,
  not in which images;
* the shorter side resized to 128 (bilinear), then the centre 128x128: DFAD's test input.
  DFAD trains its teacher on random 128-crops along the longer side; stored here is the
  centre crop only, and teacher training augments it with flips and 4-pixel shifts.

The result is the array_record dataset ``ddad_caltech101_128`` in the data dir, read as
``data.DATASETS['caltech101']`` (normalised to [-1, 1] as DFAD's ``Normalize((0.5,), (0.5,))``).
"""

import dataclasses
import os
from typing import Iterable, List, Tuple

import numpy as np

from ddad_jax import data
from ddad_jax.errors import UserError

SIZE = 128
TEST_SHARE, MIN_TEST = 0.2, 2
BACKGROUND = "background_google"
SOURCE = "caltech101"  # tfds's dataset
SPLIT_SEED = 1  # DFAD's split_caltech101.py seeds with 1 too


def centre_square(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """``image`` (HxW, HxWx1 or HxWx3 uint8) as RGB with its shorter side resized to ``size``
    (PIL bilinear) and the centre ``size`` x ``size`` cut out: torchvision's Resize(size) then
    CenterCrop(size)."""
    from PIL import Image  # pylint: disable=import-outside-toplevel
    image = np.asarray(image)
    im = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image).convert("RGB")
    w, h = im.size
    scale = size / min(w, h)
    w2, h2 = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((w2, h2), Image.BILINEAR)
    left, top = (w2 - size) // 2, (h2 - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), np.uint8)


def test_mask(labels: np.ndarray, seed: int = SPLIT_SEED) -> np.ndarray:
    """True for the images of the test split: per class, ``max(int(0.2 n), 2)`` of its ``n``
    images, drawn without replacement in an order fixed by (``seed``, class)."""
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(int(TEST_SHARE * len(idx)), MIN_TEST)
        if k >= len(idx):
            raise UserError(f"class {c} has {len(idx)} images; the split needs more than {k}")
        mask[np.random.default_rng([seed, int(c)]).choice(idx, k, replace=False)] = True
    return mask


def convert(records: Iterable[Tuple[np.ndarray, int]], names: List[str]) -> Tuple[dict, List[str]]:
    """(splits, class names) from tfds records (image, label over ``names``): background
    dropped, the others relabelled in their order, centre-squared and split."""
    keep = [n for n in names if n != BACKGROUND]
    relabel = {names.index(n): i for i, n in enumerate(keep)}
    images, labels = [], []
    for image, label in records:
        if int(label) in relabel:
            images.append(centre_square(image))
            labels.append(relabel[int(label)])
    if not images:
        raise UserError("tfds's caltech101 holds no object images; prepare it again with --force")
    x, y = np.stack(images), np.asarray(labels, np.int64)
    test = test_mask(y)
    return {"train": (x[~test], y[~test]), "test": (x[test], y[test])}, keep


def prepare(data_dir: str, force: bool = False) -> str:
    """Downloads tfds's caltech101 into ``data_dir`` unless it is there, converts it and
    writes ``ddad_caltech101_128`` (replaced only with ``force``); returns its folder."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    from ddad_jax.data import custom  # pylint: disable=import-outside-toplevel

    spec = data.DATASETS["caltech101"]
    final = os.path.join(data_dir, spec.tfds_name)
    if os.path.exists(final) and not force:
        raise UserError(f"caltech101 is prepared already in {final}; pass --force to prepare it again")
    if not data.prepared_splits(dataclasses.replace(spec, tfds_name=SOURCE), data_dir):
        try:
            tfds.builder(SOURCE, data_dir=data_dir, file_format="array_record").download_and_prepare()
        except Exception as e:  # pylint: disable=broad-except  (no network, no TensorFlow)
            raise UserError(f"tfds could not download and prepare caltech101 into {data_dir} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                            "this step needs network and tensorflow") from None
    sources = tfds.data_source(SOURCE, data_dir=data_dir)
    names = list(tfds.builder(SOURCE, data_dir=data_dir).info.features["label"].names)
    if len(set(names) - {BACKGROUND}) != spec.num_classes:  # before minutes of decoding, not after
        raise UserError(f"tfds's caltech101 has {len(set(names) - {BACKGROUND})} object classes, "
                        f"expected {spec.num_classes}")

    def records():
        for split in sorted(sources):
            source = sources[split]
            for start in range(0, len(source), 256):
                for r in source.__getitems__(list(range(start, min(start + 256, len(source))))):
                    yield r["image"], r["label"]

    splits, classes = convert(records(), names)
    card = {"name": "caltech101", "tfds_name": spec.tfds_name, "num_classes": len(classes), "class_names": classes,
            "channels": 3, "source_size": SIZE, "image_size": SIZE, "mean": list(spec.mean), "std": list(spec.std),
            "statistics": "DFAD's normalisation to [-1, 1], not computed",
            "splits": {s: int(len(y)) for s, (_, y) in splits.items()},
            "source": f"tfds {SOURCE} in {data_dir}: background dropped, shorter side {SIZE}, centre crop, "
                      f"{TEST_SHARE:.0%} of each class for test (seed {SPLIT_SEED})"}
    return custom.write(card, splits, data_dir, force)
