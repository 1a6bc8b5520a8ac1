"""Prepare a dataset for ddad_jax as array_record files under the tfds data dir.

    python -m ddad_jax.data.prepare fashion_mnist      # offline, from dataset-fashion-mnist
    python -m ddad_jax.data.prepare cifar10            # stock tfds builder: network + tensorflow
"""

import os
import sys

from absl import app, flags

from ddad_jax.data import default_data_dir, get_spec
from ddad_jax.errors import UserError

flags.DEFINE_string("data_dir", None, "tfds data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
flags.DEFINE_string("source_dir", None, "Fashion-MNIST only: folder with the IDX .gz files")
FLAGS = flags.FLAGS


def prepare(name: str, data_dir: str, source_dir=None) -> str:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    spec = get_spec(name)
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
        raise app.UsageError("usage: python -m ddad_jax.data.prepare DATASET")
    try:
        path = prepare(argv[1], FLAGS.data_dir or default_data_dir(), FLAGS.source_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"prepared {argv[1]} in {path}")


if __name__ == "__main__":
    app.run(main)
