"""Datasets by name: what a model sees (size, channels, normalisation) and how to read them.

Splits are read through ``tfds.data_source`` (array_record, no TensorFlow needed) once,
into host memory as uint8 arrays: every dataset used here fits, and batches are then
a gather, so the input never stalls the step. Each host reads its own even shard.
"""

import dataclasses
import functools
import glob
import json
import os
from typing import Dict, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ddad_jax.data import classes
from ddad_jax.errors import UserError

MAX_IMAGE_SIZE = 224  # the largest input the models and generators here are built for (ImageNet's)
MIN_MODEL_SIZE = 32  # smaller stored images are zero-padded to this, centred (DAFL's Fashion-MNIST)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    tfds_name: str
    num_classes: int
    channels: int
    source_size: int  # stored image height = width
    image_size: int  # what models see (Fashion-MNIST is zero-padded 28 -> 32 as in DAFL)
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    augment: bool  # random crop + flip for supervised training
    prepare_hint: str
    class_names: Tuple[str, ...] = ()  # in label order; () when unknown
    # source_size -> image_size: False zero-pads, centred; True resizes bilinearly (a teacher
    # trained on resized images, e.g. DFAD's Fashion-MNIST LeNet-5 at 32x32)
    resize: bool = False


DATASETS = {
    # Fashion-MNIST is standardised with the statistics of the zero-padded 32x32 training
    # images (0.2860/0.3530 before padding), so real inputs have mean 0 and std 1 exactly
    # like the generator's output after its final affine-free BatchNorm.
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", "fashion_mnist_offline", 10, 1, 28, 32, (0.2190,), (0.3318,), False,
        "prepare it offline with `python -m ddad_jax.data.prepare fashion_mnist` "
        "(needs `apt-get install dataset-fashion-mnist`)", classes.FASHION_MNIST),
    "cifar10": DatasetSpec(
        "cifar10", "cifar10", 10, 3, 32, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), True,
        "prepare it with `python -m ddad_jax.data.prepare cifar10` (needs network and tensorflow)", classes.CIFAR10),
    "cifar100": DatasetSpec(
        "cifar100", "cifar100", 100, 3, 32, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True,
        "prepare it with `python -m ddad_jax.data.prepare cifar100` (needs network and tensorflow)", classes.CIFAR100),
    # DFAD's Caltech101 (ddad_jax/data/caltech101.py): 101 object classes, 128x128 centre
    # crops, normalised to [-1, 1] as DFAD's Normalize((0.5,), (0.5,)).
    "caltech101": DatasetSpec(
        "caltech101", "ddad_caltech101_128", 101, 3, 128, 128, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), True,
        "prepare it with `python -m ddad_jax.data.prepare caltech101` (downloads tfds's caltech101 once: needs "
        "network and tensorflow)"),
}


def with_preprocessing(spec: DatasetSpec, image_size: Optional[int] = None, resize: Optional[bool] = None,
                       mean: Optional[Tuple[float, ...]] = None, std: Optional[Tuple[float, ...]] = None) -> DatasetSpec:
    """``spec`` with a teacher's own preprocessing (what is not given stays ``spec``'s): the size
    models see, reached by bilinear ``resize`` or zero-padding, and the per-channel mean and std
    of the images in [0, 1]. UserError when the combination cannot be computed."""
    image_size = spec.image_size if image_size is None else int(image_size)
    resize = spec.resize if resize is None else bool(resize)
    mean = spec.mean if mean is None else tuple(float(m) for m in mean)
    std = spec.std if std is None else tuple(float(s) for s in std)
    if len(mean) != spec.channels or len(std) != spec.channels:
        raise UserError(f"{spec.name} images have {spec.channels} channel(s): give one mean and one std per channel, "
                        f"got mean={mean}, std={std}")
    if min(std) <= 0:
        raise UserError(f"std must be positive, got {std}")
    if not 4 <= image_size <= MAX_IMAGE_SIZE:
        raise UserError(f"image size {image_size} is outside 4..{MAX_IMAGE_SIZE}, the sizes models and generators "
                        "here are built for")
    if not resize and (image_size < spec.source_size or (image_size - spec.source_size) % 2):
        raise UserError(f"{spec.name}'s {spec.source_size}x{spec.source_size} images cannot be zero-padded to "
                        f"{image_size}x{image_size} (equal padding on both sides needs a size >= {spec.source_size} "
                        "and of the same parity); resize them instead")
    return dataclasses.replace(spec, image_size=image_size, resize=resize, mean=mean, std=std)


def describe_preprocessing(spec: DatasetSpec) -> str:
    """One line: how raw pixels become the model's input."""
    size = f"{spec.source_size}x{spec.source_size}"
    if spec.image_size != spec.source_size:
        how = "resized bilinearly" if spec.resize else "zero-padded, centred,"
        size += f" {how} to {spec.image_size}x{spec.image_size}"
    return f"pixels / 255 ({size}), standardised with mean {spec.mean}, std {spec.std}"


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


# Specs handed over in Python (``ddad_jax.api``) for this process: a teacher with no dataset
# behind it still has an input shape, classes and a normalisation.
_REGISTERED = {}


def register_spec(spec: DatasetSpec) -> DatasetSpec:
    """Makes ``get_spec(spec.name)`` return ``spec`` in this process (a built-in name cannot be
    replaced)."""
    if spec.name in DATASETS and DATASETS[spec.name] != spec:
        raise UserError(f"'{spec.name}' is a built-in dataset; give your input spec another name")
    _REGISTERED[spec.name] = spec
    return spec


# A user's own dataset (``python -m ddad_jax.data.prepare NAME --from_folder=DIR``, see
# ``data/custom.py``) is the tfds dataset ``ddad_custom_NAME``: the prefix keeps it clear of
# tfds's own catalogue (a user's 'mnist' would otherwise be read with tfds's MNIST builder).
# Its card (``card.json`` in that folder) holds what a ``DatasetSpec`` needs.
CUSTOM_PREFIX, CARD = "ddad_custom_", "card.json"


def custom_dir(name: str, data_dir: Optional[str] = None) -> str:
    """The folder of the user's dataset ``name``: its tfds versions and its card."""
    return os.path.join(data_dir or default_data_dir(), CUSTOM_PREFIX + name)


def custom_hint(name: str) -> str:
    return (f"prepare it with `python -m ddad_jax.data.prepare {name} --from_folder=DIR` "
            "(or --from_arrays=FILE.npz; docs/data.md)")


def spec_to_dict(spec: DatasetSpec) -> dict:
    """A spec as JSON has it (a teacher's card carries its dataset's spec)."""
    return dataclasses.asdict(spec)


def spec_from_dict(d: dict) -> DatasetSpec:
    """The inverse of ``spec_to_dict`` (tuples again: a spec is a static, hashable jit argument)."""
    fields = {f.name for f in dataclasses.fields(DatasetSpec)}
    return DatasetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})


def spec_from_card(card: dict) -> DatasetSpec:
    """The spec of a prepared custom dataset, from its card."""
    return DatasetSpec(card["name"], card["tfds_name"], int(card["num_classes"]), int(card["channels"]),
                       int(card["source_size"]), int(card["image_size"]), tuple(map(float, card["mean"])),
                       tuple(map(float, card["std"])), False, custom_hint(card["name"]),
                       tuple(map(str, card.get("class_names", ()))))


def read_card(name: str, data_dir: Optional[str] = None) -> Optional[dict]:
    """The card of the prepared custom dataset ``name``, or None when there is none."""
    path = os.path.join(custom_dir(name, data_dir), CARD)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable dataset card ({e}); prepare '{name}' again with --force") from None


def custom_names(data_dir: Optional[str] = None):
    """The custom datasets prepared in ``data_dir``, sorted."""
    cards = glob.glob(os.path.join(data_dir or default_data_dir(), CUSTOM_PREFIX + "*", CARD))
    return sorted(os.path.basename(os.path.dirname(c))[len(CUSTOM_PREFIX):] for c in cards)


def get_spec(name: str, data_dir: Optional[str] = None) -> DatasetSpec:
    """A spec ``register_spec``'d in this process, a built-in dataset's, or a custom dataset's
    from its card in ``data_dir``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in DATASETS:
        return DATASETS[name]
    card = read_card(name, data_dir)
    if card is None:
        choices = ", ".join(sorted(DATASETS) + custom_names(data_dir))
        raise UserError(f"unknown dataset '{name}'; choose one of {choices}, or prepare your own with "
                        f"`python -m ddad_jax.data.prepare {name} --from_folder=DIR` (docs/data.md)")
    try:
        return spec_from_card(card)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"the card of dataset '{name}' lacks {e}; prepare it again with --force") from None


def prepared_splits(spec: DatasetSpec, data_dir: Optional[str] = None) -> Dict[str, int]:
    """{split: examples} of ``spec``'s prepared dataset in ``data_dir`` ({} when not prepared),
    from tfds's ``dataset_info.json``: nothing is read or imported to know what is there."""
    infos = sorted(glob.glob(os.path.join(data_dir or default_data_dir(), spec.tfds_name, "*", "dataset_info.json")))
    if not infos:
        return {}
    with open(infos[-1]) as f:
        splits = json.load(f).get("splits", [])
    return {s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in splits}


def load_split(spec: DatasetSpec, split: str, data_dir: Optional[str] = None,
               shard_index: Optional[int] = None, shard_count: Optional[int] = None,
               chunk: int = 4096, num_examples: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Reads this host's even shard of ``split`` as (uint8 images NHWC, int32 labels); with
    ``num_examples``, of the split's first ``num_examples`` only (the same ones whatever the
    number of hosts)."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    data_dir = data_dir or default_data_dir()
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    # Look locally first: for a stock builder tfds would otherwise search remote copies (minutes).
    if not glob.glob(os.path.join(data_dir, spec.tfds_name, "*", "dataset_info.json")):
        raise UserError(f"dataset '{spec.name}' is not prepared in {data_dir}; {spec.prepare_hint}")
    try:
        sources = tfds.data_source(spec.tfds_name, data_dir=data_dir)
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"dataset '{spec.name}' is not prepared in {data_dir} as array_record "
                        f"({type(e).__name__}); {spec.prepare_hint}") from None
    if split not in sources:
        raise UserError(f"dataset '{spec.name}' has no split '{split}' (has {sorted(sources)})")
    source = sources[split]
    size = len(source) if num_examples is None else min(num_examples, len(source))
    lo, hi = (size * shard_index) // shard_count, (size * (shard_index + 1)) // shard_count
    images, labels = [], []
    for start in range(lo, hi, chunk):
        records = source.__getitems__(list(range(start, min(start + chunk, hi))))
        images.append(np.stack([r["image"] for r in records]))
        labels.append(np.asarray([r["label"] for r in records], np.int32))
    images = np.concatenate(images).reshape(-1, spec.source_size, spec.source_size, spec.channels)
    return images.astype(np.uint8), np.concatenate(labels)


def epoch_batches(num_examples: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Index batches of one epoch, in an order fixed by (seed, epoch); drops the remainder."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    for i in range(num_examples // batch_size):
        yield order[i * batch_size:(i + 1) * batch_size]


def balanced_subset(labels: np.ndarray, num_examples: int, seed: int, num_classes: int) -> np.ndarray:
    """Indices of ``num_examples`` examples, as many of each class as possible (the first
    ``num_examples % num_classes`` classes get one more), drawn without replacement in an
    order fixed by ``seed``: HiDFD's and few-shot KD's handful of real images."""
    counts = np.bincount(labels, minlength=num_classes)
    per_class = [num_examples // num_classes + (c < num_examples % num_classes) for c in range(num_classes)]
    short = [c for c in range(num_classes) if counts[c] < per_class[c]]
    if short:
        raise UserError(f"cannot draw {num_examples} class-balanced examples: class {short[0]} has only "
                        f"{counts[short[0]]} (needs {per_class[short[0]]})")
    rng = np.random.default_rng([seed, 12345])
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class[c]] for c in range(num_classes)]
    return np.sort(np.concatenate(picked))


def cycled_batch(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The indices of batch ``step`` (0-based) when passes over ``num_examples`` examples,
    each in an order fixed by (seed, pass), are laid end to end: a batch may straddle two
    passes, so any ``batch_size`` works with any number of examples (a few real images
    included) and every step's batch depends only on (seed, step) -- a resumed run draws
    the same batches."""
    start = step * batch_size
    positions = np.arange(start, start + batch_size)
    passes, offsets = np.divmod(positions, num_examples)
    out = np.empty(batch_size, np.int64)
    for p in np.unique(passes):
        out[passes == p] = _pass_order(num_examples, seed, int(p))[offsets[passes == p]]
    return out


@functools.lru_cache(maxsize=4)
def _pass_order(num_examples: int, seed: int, index: int) -> np.ndarray:
    """The example order of one pass (drawn once, not on every step of the pass)."""
    order = np.random.default_rng([seed, index]).permutation(num_examples)
    order.flags.writeable = False
    return order


def normalize(images: jnp.ndarray, spec: DatasetSpec) -> jnp.ndarray:
    """uint8 NHWC -> float32 in [0, 1], brought to ``spec.image_size`` (zero-padded, centred, or
    with ``spec.resize`` resized bilinearly with half-pixel centres, as PIL's and PyTorch's
    ``interpolate(..., align_corners=False)`` resize, antialiased when shrinking), then
    standardised per channel."""
    x = images.astype(jnp.float32) / 255.0
    if spec.image_size != x.shape[1] and spec.resize:
        x = jax.image.resize(x, (x.shape[0], spec.image_size, spec.image_size, x.shape[3]), "bilinear")
    elif spec.image_size != x.shape[1]:
        pad = (spec.image_size - x.shape[1]) // 2
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return (x - jnp.asarray(spec.mean)) / jnp.asarray(spec.std)


def denormalize(x: jnp.ndarray, spec: DatasetSpec) -> jnp.ndarray:
    """Model-space images -> [0, 1] for display."""
    return jnp.clip(x * jnp.asarray(spec.std) + jnp.asarray(spec.mean), 0.0, 1.0)
