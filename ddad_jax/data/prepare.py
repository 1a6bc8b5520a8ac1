"""Prepare a dataset for ddad_jax as array_record files under the tfds data dir.

    python -m ddad_jax.data.prepare fashion_mnist      # offline, from dataset-fashion-mnist
    python -m ddad_jax.data.prepare cifar10            # stock tfds builder: network + tensorflow
    python -m ddad_jax.data.prepare caltech101         # tfds's, in DFAD's protocol (data/caltech101.py)
    python -m ddad_jax.data.prepare NAME --from_folder=DIR       # your own images (docs/data.md)
    python -m ddad_jax.data.prepare NAME --from_arrays=FILE.npz  # your own arrays
"""

import os
import sys

from absl import app, flags

from ddad_jax.data import DATASETS, custom_dir, default_data_dir, get_spec
from ddad_jax.errors import UserError

flags.DEFINE_string("data_dir", None, "tfds data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
flags.DEFINE_string("source_dir", None, "Fashion-MNIST only: folder with the IDX .gz files")
flags.DEFINE_string("from_folder", None, "your own images: DIR/<class>/*.png, or DIR/train/<class>/ and DIR/test/<class>/")
flags.DEFINE_string("from_arrays", None, "your own arrays: an .npz with x_train, y_train[, x_test, y_test]")
flags.DEFINE_integer("image_size", None, "your own images: resize every one to this square size (at most 224; "
                     "under 32 even, then zero-padded to 32)")
flags.DEFINE_integer("channels", None, "1 (grayscale) or 3 (RGB); default: 1 if every image is grayscale")
flags.DEFINE_bool("force", False, "replace a dataset of this name prepared before")
FLAGS = flags.FLAGS


def prepare(name: str, data_dir: str, source_dir=None, force: bool = False) -> str:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    spec = get_spec(name, data_dir)
    if name not in DATASETS:  # a custom dataset's card was found: it is prepared
        raise UserError(f"'{name}' is your own dataset, prepared in {custom_dir(name, data_dir)}; to prepare it "
                        "again pass --from_folder=DIR or --from_arrays=FILE.npz with --force")
    if name == "caltech101":
        from ddad_jax.data import caltech101  # pylint: disable=import-outside-toplevel
        return caltech101.prepare(data_dir, force)
    if name == "fashion_mnist":
        from ddad_jax.data import fashion_mnist  # pylint: disable=import-outside-toplevel
        source_dir = source_dir or fashion_mnist.DEFAULT_SOURCE_DIR
        missing = [f for f in fashion_mnist.source_files(source_dir) if not os.path.exists(f)]
        if missing:
            raise UserError(f"missing {missing[0]}: install Debian's dataset-fashion-mnist "
                            "(`apt-get install dataset-fashion-mnist`) or pass --source_dir")
        builder = fashion_mnist.FashionMnistOffline(source_dir=source_dir, data_dir=data_dir,
                                                    file_format="array_record")
    else:
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return builder.data_dir


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: python -m ddad_jax.data.prepare DATASET [--from_folder=DIR | --from_arrays=FILE.npz]")
    try:
        data_dir = FLAGS.data_dir or default_data_dir()
        if FLAGS.from_folder is not None or FLAGS.from_arrays is not None:
            from ddad_jax.data import custom  # pylint: disable=import-outside-toplevel
            path = custom.prepare_custom(argv[1], data_dir, from_folder=FLAGS.from_folder,
                                         from_arrays=FLAGS.from_arrays, image_size=FLAGS.image_size,
                                         channels=FLAGS.channels, force=FLAGS.force)
        else:
            if FLAGS.image_size is not None or FLAGS.channels is not None:
                raise UserError("--image_size and --channels apply to your own images (--from_folder, --from_arrays); "
                                f"'{argv[1]}' is stored as published, and a teacher trained on it at another size "
                                "states that size when imported (python -m ddad_jax.import_teacher --resize=N)")
            path = prepare(argv[1], data_dir, FLAGS.source_dir, FLAGS.force)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"prepared {argv[1]} in {path}")


if __name__ == "__main__":
    app.run(main)
