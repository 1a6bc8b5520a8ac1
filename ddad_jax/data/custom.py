"""A user's own images as a ddad_jax dataset: the same tfds/array_record form as the built-in ones.

    python -m ddad_jax.data.prepare NAME --from_folder=DIR      # DIR/<class>/*.png, or DIR/train, DIR/test
    python -m ddad_jax.data.prepare NAME --from_arrays=FILE.npz  # x_train, y_train[, x_test, y_test]

Everything is read and checked before anything is written, so a bad input leaves the data
dir as it was. Then the tfds dataset ``ddad_custom_NAME`` (Tensor features: writing it needs
no TensorFlow) and its card ``card.json`` (classes, channels, size, normalisation, splits) are
built in a temporary folder beside it and renamed into place, so a half-written dataset is
never found. ``data.get_spec(NAME)`` reads the card.

Images of 32x32 up to 224x224 are kept at their size and models see them so; smaller
(even-sized) images are zero-padded to 32x32, centred, as Fashion-MNIST's 28x28 are.
``--image_size=N`` resizes every image to NxN first (needed for images of mixed or
non-square sizes, or larger than 224). The normalisation is computed on the training images
as the models see them (padded), like Fashion-MNIST's.
"""

import json
import os
import re
import shutil
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np

from ddad_jax import data
from ddad_jax.errors import UserError

MIN_MODEL_SIZE, MAX_IMAGE_SIZE = data.MIN_MODEL_SIZE, data.MAX_IMAGE_SIZE
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAY_MODES = ("1", "L", "LA")  # PIL modes read as one channel when --channels is not given
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}$")

Splits = Dict[str, Tuple[np.ndarray, np.ndarray]]  # split -> (uint8 NHWC images, int labels)


def check_name(name: str, data_dir: str, force: bool) -> None:
    """A new dataset's name: tfds-safe, not a built-in one, not prepared already (unless ``force``)."""
    if not _NAME.match(name):
        raise UserError(f"dataset name '{name}' must be lower-case letters, digits and '_', starting with a letter")
    if name in data.DATASETS:
        raise UserError(f"'{name}' is a built-in dataset; give your own data another name")
    if os.path.exists(data.custom_dir(name, data_dir)) and not force:
        raise UserError(f"dataset '{name}' is prepared already in {data.custom_dir(name, data_dir)}; "
                        "pass --force to replace it")


def check_image_size(size: int, what: str) -> None:
    """Models see 32x32 to 224x224 images: a smaller one is padded equally on both sides to
    32x32, so its size is even."""
    if size > MAX_IMAGE_SIZE:
        raise UserError(f"{what} is {size}x{size}; models and generators here are built for at most "
                        f"{MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE}: pass --image_size=N (N <= {MAX_IMAGE_SIZE}) to resize")
    if size < 2 or (size < MIN_MODEL_SIZE and size % 2):
        raise UserError(f"{what} is {size}x{size}; images under {MIN_MODEL_SIZE}x{MIN_MODEL_SIZE} are zero-padded "
                        f"to it equally on both sides, so their size must be even: pass --image_size=N to resize")


def model_size(size: int) -> int:
    """The size models see for stored images of ``size``: theirs, or 32 for smaller ones (padded)."""
    return max(size, MIN_MODEL_SIZE)


# ---------------------------------------------------------------------------------------------
# a folder of images

def _class_folders(root: str) -> List[str]:
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def _image_files(folder: str) -> List[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))


def list_folder(root: str) -> Tuple[Dict[str, List[Tuple[str, int]]], List[str]]:
    """({split: [(image path, label)]}, class names) of ``root``: ``root/<class>/`` (train only)
    or ``root/train/<class>/`` and optionally ``root/test/<class>/``. Class names, sorted, are
    the label ids; the test split's classes must be among the training ones."""
    if not os.path.isdir(root):
        raise UserError(f"--from_folder {root} is not a folder")
    top = _class_folders(root)
    roots = {"train": root}
    if "train" in top:
        extra = sorted(set(top) - {"train", "test"})
        if extra:
            raise UserError(f"{root} has train/ and also '{extra[0]}/'; put class folders only in train/ and test/")
        roots = {s: os.path.join(root, s) for s in ("train", "test") if s in top}
    classes = _class_folders(roots["train"])
    files = {split: {c: _image_files(os.path.join(r, c)) for c in _class_folders(r)} for split, r in roots.items()}
    if not any(files["train"].values()):
        raise UserError(f"no images in {roots['train']}: expected {roots['train']}/<class name>/*.png (or "
                        f"{', '.join(e for e in IMAGE_EXTENSIONS[1:5])}, ...), one folder per class")
    for split, by_class in files.items():
        for c, paths in by_class.items():
            if not paths:
                raise UserError(f"class folder {os.path.join(roots[split], c)} has no images")
            if c not in classes:
                raise UserError(f"{split} class '{c}' has no folder in {roots['train']}")
    if len(classes) < 2:
        raise UserError(f"only one class ('{classes[0]}') in {roots['train']}; a classifier needs at least two "
                        "class folders")
    listed = {split: [(p, classes.index(c)) for c in sorted(by_class) for p in by_class[c]]
              for split, by_class in files.items()}
    return listed, classes


def _open(path: str):
    from PIL import Image  # pylint: disable=import-outside-toplevel
    try:
        return Image.open(path)
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"cannot read image {path} ({type(e).__name__}: {e})") from None


def read_folder(root: str, image_size: Optional[int] = None, channels: Optional[int] = None) -> Tuple[Splits, List[str]]:
    """The images of ``root`` (see ``list_folder``) as uint8 arrays, all of one size and channel count."""
    from PIL import Image  # pylint: disable=import-outside-toplevel
    listed, classes = list_folder(root)
    # First only the headers: sizes and modes decide the shape before any pixel is decoded.
    headers = {}
    for items in listed.values():
        for path, _ in items:
            with _open(path) as im:
                headers[path] = (im.size, im.mode)
    if image_size is None:
        sizes = {}
        for path, (size, _) in headers.items():
            sizes.setdefault(size, path)
        if len(sizes) > 1:
            (s1, p1), (s2, p2) = list(sizes.items())[:2]
            raise UserError(f"images differ in size ({p1} is {s1[0]}x{s1[1]}, {p2} is {s2[0]}x{s2[1]}); "
                            f"pass --image_size=N to resize them all to NxN (N at most {MAX_IMAGE_SIZE})")
        (width, height), path = next(iter(sizes.items()))
        if width != height:
            raise UserError(f"images are {width}x{height}, not square ({path}); pass --image_size=N to resize them")
        check_image_size(width, "the images")
    size = image_size or width
    channels = channels or (1 if all(mode in GRAY_MODES for _, mode in headers.values()) else 3)
    splits = {}
    for split, items in listed.items():
        x = np.empty((len(items), size, size, channels), np.uint8)
        for i, (path, _) in enumerate(items):
            with _open(path) as im:
                try:
                    im = im.convert("L" if channels == 1 else "RGB")
                    if im.size != (size, size):
                        im = im.resize((size, size), Image.BILINEAR)
                    x[i] = np.asarray(im).reshape(size, size, channels)
                except Exception as e:  # pylint: disable=broad-except
                    raise UserError(f"cannot read image {path} ({type(e).__name__}: {e})") from None
        splits[split] = (x, np.asarray([label for _, label in items], np.int64))
    return splits, classes


# ---------------------------------------------------------------------------------------------
# arrays

def _images(x: np.ndarray, key: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise UserError(f"{key} must be uint8 images (0..255), got {x.dtype}; "
                        "convert e.g. with (x * 255).round().astype(np.uint8)")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise UserError(f"{key} must be NHWC with 1 or 3 channels, or NHW (grayscale), and hold at least one "
                        f"image; got shape {x.shape}")
    return x


def _labels(y: np.ndarray, n: int, key: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{key} must be a 1-D array of integer labels, got {y.dtype} of shape {y.shape}")
    if len(y) != n:
        raise UserError(f"{key} has {len(y)} labels for {n} images")
    return y.astype(np.int64)


def _convert(x: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Images resized to ``size`` and converted to ``channels`` with PIL, when they differ."""
    if x.shape[1:] == (size, size, channels):
        return x
    from PIL import Image  # pylint: disable=import-outside-toplevel
    out = np.empty((len(x), size, size, channels), np.uint8)
    for i, image in enumerate(x):
        im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(im).reshape(size, size, channels)
    return out


def read_arrays(path: str, image_size: Optional[int] = None,
                channels: Optional[int] = None) -> Tuple[Splits, List[str]]:
    """``x_train``, ``y_train`` (and optionally ``x_test``, ``y_test``, ``class_names``) of an .npz
    file: uint8 images NHWC or NHW, integer labels 0..C-1, every class in the training split."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"cannot read --from_arrays {path} as an .npz file ({type(e).__name__}: {e})") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise UserError(f"{path} has no '{key}' (it has {', '.join(sorted(arrays)) or 'nothing'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"{path} has only one of x_test and y_test")
    splits = {}
    for split in ("train", "test"):
        if f"x_{split}" in arrays:
            x = _images(arrays[f"x_{split}"], f"x_{split}")
            splits[split] = (x, _labels(arrays[f"y_{split}"], len(x), f"y_{split}"))
    train_y = splits["train"][1]
    num_classes = int(train_y.max()) + 1
    for split, (_, y) in splits.items():
        if y.min() < 0 or y.max() >= num_classes:
            raise UserError(f"y_{split} has label {int(y.min() if y.min() < 0 else y.max())}; labels must be "
                            f"0..{num_classes - 1} (the classes of y_train)")
    missing = np.flatnonzero(np.bincount(train_y, minlength=num_classes) == 0)
    if num_classes < 2:
        raise UserError("y_train holds one class only; a classifier needs at least two")
    if len(missing):
        raise UserError(f"y_train has no example of class {missing[0]} (labels must be 0..C-1, each present)")
    shapes = {x.shape[1:3] for x, _ in splits.values()}
    if image_size is None:
        if len(shapes) > 1 or next(iter(shapes))[0] != next(iter(shapes))[1]:
            raise UserError(f"images must be square and of one size, got {sorted(shapes)}; "
                            "pass --image_size=N to resize them")
        check_image_size(next(iter(shapes))[0], "the images")
    size = image_size or next(iter(shapes))[0]
    channels = channels or splits["train"][0].shape[-1]
    names = [str(n) for n in arrays.get("class_names", np.arange(num_classes))]
    if len(names) != num_classes or len(set(names)) != num_classes:
        raise UserError(f"class_names must be {num_classes} distinct names, got {len(names)}")
    return {s: (_convert(x, size, channels), y) for s, (x, y) in splits.items()}, names


# ---------------------------------------------------------------------------------------------
# statistics, card, writing

def statistics(images: np.ndarray) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images scaled to [0, 1] and, if smaller,
    zero-padded to 32x32, as ``data.normalize`` feeds them to the models; summed in float64, in
    chunks."""
    n, size, _, channels = images.shape
    total, squares = np.zeros(channels), np.zeros(channels)
    for start in range(0, n, 4096):
        x = images[start:start + 4096].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 1, 2))
        squares += (x * x).sum(axis=(0, 1, 2))
    count = n * model_size(size) ** 2  # the padding adds zeros: to the count only
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    if np.any(std == 0):
        raise UserError("the training images are all one colour (a channel with std 0); nothing to learn")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def make_card(name: str, splits: Splits, class_names: List[str], source: str) -> dict:
    x = splits["train"][0]
    mean, std = statistics(x)
    return {"name": name, "tfds_name": data.CUSTOM_PREFIX + name, "num_classes": len(class_names),
            "class_names": list(class_names), "channels": int(x.shape[-1]), "source_size": int(x.shape[1]),
            "image_size": model_size(int(x.shape[1])), "mean": list(mean), "std": list(std),
            "statistics": "per channel over the training images in [0, 1]"
                          + (f", zero-padded to {MIN_MODEL_SIZE}x{MIN_MODEL_SIZE}" if x.shape[1] < MIN_MODEL_SIZE else ""),
            "splits": {s: int(len(y)) for s, (_, y) in splits.items()}, "source": source}


def _builder_class(card: dict, splits: Splits):
    """A tfds builder writing ``splits`` as the dataset ``card['tfds_name']``."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    shape = (card["source_size"], card["source_size"], card["channels"])

    class CustomImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """A user's images, prepared by ``python -m ddad_jax.data.prepare``."""
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, description=f"{card['name']}: {card['source']}",
                features=tfds.features.FeaturesDict({
                    # Tensor, not Image: writing PNG-encoded Images needs TensorFlow.
                    "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=card["class_names"]),
                }),
                supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing is downloaded
            return {split: self._generate_examples(x, y) for split, (x, y) in splits.items()}

        def _generate_examples(self, x, y):  # pylint: disable=arguments-differ
            for i in range(len(x)):
                yield i, {"image": x[i], "label": int(y[i])}

    CustomImages.name = card["tfds_name"]
    return CustomImages


def write(card: dict, splits: Splits, data_dir: str, force: bool) -> str:
    """Writes the dataset and its card in a temporary folder of ``data_dir``, then renames it
    into place, ``data_dir/card['tfds_name']`` (replacing an earlier one only with ``force``);
    returns its folder."""
    final = os.path.join(data_dir, card["tfds_name"])
    os.makedirs(data_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{card['tfds_name']}.", dir=data_dir)
    try:
        _builder_class(card, splits)(data_dir=tmp, file_format="array_record").download_and_prepare()
        built = os.path.join(tmp, card["tfds_name"])
        with open(os.path.join(built, data.CARD), "w") as f:
            json.dump(card, f, indent=2)
        if os.path.exists(final):
            if not force:
                raise UserError(f"dataset '{card['name']}' appeared in {final} meanwhile; pass --force to replace it")
            shutil.rmtree(final)
        os.rename(built, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def prepare_custom(name: str, data_dir: str, *, from_folder: Optional[str] = None, from_arrays: Optional[str] = None,
                   image_size: Optional[int] = None, channels: Optional[int] = None, force: bool = False) -> str:
    """Reads, checks and writes the user's dataset ``name``; returns its folder."""
    if (from_folder is None) == (from_arrays is None):
        raise UserError("pass exactly one of --from_folder and --from_arrays")
    if channels not in (None, 1, 3):
        raise UserError(f"--channels must be 1 or 3, got {channels}")
    if image_size is not None:
        check_image_size(image_size, "--image_size")
    check_name(name, data_dir, force)
    if from_folder is not None:
        splits, classes = read_folder(from_folder, image_size, channels)
        source = os.path.abspath(from_folder)
    else:
        splits, classes = read_arrays(from_arrays, image_size, channels)
        source = os.path.abspath(from_arrays)
    return write(make_card(name, splits, classes, source), splits, data_dir, force)
