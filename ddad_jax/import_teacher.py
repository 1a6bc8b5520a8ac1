"""Import a teacher trained in PyTorch, as a teacher directory DDAD (and every method) loads.

    python -m ddad_jax.import_teacher --state_dict=resnet34.pt --model=resnet34 \\
        --dataset=cifar10 --out=teachers/resnet34_torch
    python -m experiments.cifar10 --config=configs/ddad.py:cifar10 --workdir=runs/ddad \\
        --config.teacher_dir=teachers/resnet34_torch --config.teacher=resnet34

Writes ``OUT/teacher/`` (the Flax variables) and ``OUT/teacher.json`` (the card
``teacher.load_teacher`` reads: model, dataset, "source": "pytorch", the file's sha256, and
the test accuracy measured here on the prepared test split, or null with a note when the
split is not prepared). The layouts it reads, and how, are in ``ddad_jax/torch_import.py``;
``.pt``/``.pth`` files need PyTorch (``pip install 'ddad_jax[torch]'``) and are loaded with
``weights_only=True``. An existing OUT is refused unless ``--force``.

A teacher trained on other preprocessing than ddad_jax's for its dataset states its own, and
the card records it (``dataset_spec``): evaluation, distillation (the BN term sees the
teacher's input), the generator's images and the exported student all follow it.

    # DFAD's Fashion-MNIST LeNet-5: resized to 32x32, MNIST's normalisation
    python -m ddad_jax.import_teacher --state_dict=lenet5.pt --model=lenet5 --dataset=fashion_mnist \\
        --resize=32 --mean=0.1307 --std=0.3081 --out=teachers/lenet5_dfad
"""

import os
import sys
from typing import Optional

from absl import app, flags, logging

from ddad_jax import data
from ddad_jax.errors import UserError

FLAGS = flags.FLAGS

NEAR_CHANCE = 1.5  # a test accuracy under 1.5x chance suggests other input preprocessing


def _measure(model, variables, spec, data_dir, test_examples=None):
    """(test accuracy, number of test examples, note): accuracy None with a note when the
    test split cannot be read. ``test_examples``: the split's first N only (default all)."""
    from ddad_jax import evaluation  # pylint: disable=import-outside-toplevel
    try:
        images, labels = data.load_split(spec, "test", data_dir, shard_index=0, shard_count=1,
                                         num_examples=test_examples)
    except UserError as e:
        return None, 0, f"not measured: {e}"
    acc = evaluation.evaluate(model, variables, evaluation.EvalSet.build(images, labels, spec, 500))
    return acc, len(labels), None


def teacher_spec(dataset: str, mean=None, std=None, resize=None, pad=None) -> data.DatasetSpec:
    """``dataset``'s spec with the teacher's own preprocessing: ``mean``/``std`` per channel (of
    images in [0, 1]), and ``resize`` (bilinear) or ``pad`` (zeros, centred) to that size."""
    if resize is not None and pad is not None:
        raise UserError("pass one of --resize and --pad: the teacher's images were either resized or padded")
    size = resize if resize is not None else pad
    return data.with_preprocessing(data.get_spec(dataset), image_size=size,
                                   resize=None if size is None else resize is not None, mean=mean, std=std)


def import_teacher(state_dict_path: str, model_name: str, dataset: str, out: str, force: bool = False,
                   data_dir=None, spec: Optional[data.DatasetSpec] = None, test_examples: Optional[int] = None) -> dict:
    """Converts, measures and writes the teacher; returns its card. ``spec``: the teacher's
    preprocessing (``teacher_spec``; default the dataset's own). Nothing is written when
    anything is wrong with the input (UserError)."""
    from ddad_jax import models, teacher, torch_import, workdir as workdir_lib  # pylint: disable=import-outside-toplevel

    spec = spec or data.get_spec(dataset)
    if model_name not in models.CLASSIFIERS:
        models.get_classifier(model_name, spec.num_classes)  # the registry's error, with the known names
    target = workdir_lib.path(out)
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {out} is a file; choose a directory")
    if target.exists() and not force:
        raise UserError(f"--out {out} exists; pass --force to replace its {teacher.TEACHER_SUBDIR}/ and "
                        f"{teacher.TEACHER_META}, or choose another --out")
    state_dict = torch_import.read_state_dict(state_dict_path)
    variables = torch_import.convert_state_dict(state_dict, model_name, dataset, spec.image_size)
    model = models.get_classifier(model_name, spec.num_classes)
    acc, examples, note = _measure(model, variables, spec, data_dir or data.default_data_dir(), test_examples)
    card = {"model": model_name, "dataset": dataset, "test_acc": acc, "test_examples": examples,
            "source": "pytorch", "state_dict": os.path.abspath(state_dict_path),
            "sha256": torch_import.file_sha256(state_dict_path),
            "preprocessing": data.describe_preprocessing(spec), "dataset_spec": data.spec_to_dict(spec)}
    if note:
        card["test_acc_note"] = note
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out {out} ({e.strerror})") from None
    teacher.export(out, variables, card)
    return card


def define_flags():
    """The CLI's flags, defined only when it runs (``ddad_jax.data.prepare`` has a --data_dir too)."""
    flags.DEFINE_string("state_dict", None, "the PyTorch state_dict: a .pt/.pth file (torch.save(model.state_dict())) "
                        "or a .safetensors file")
    flags.DEFINE_string("model", None, "the registry architecture it is, e.g. resnet34 (see ddad_jax/torch_import.py)")
    flags.DEFINE_string("dataset", None, "what it classifies: fashion_mnist, cifar10 or cifar100")
    flags.DEFINE_string("out", None, "the teacher directory to write (then --config.teacher_dir=OUT)")
    flags.DEFINE_list("mean", None, "the teacher's input mean per channel, of images in [0, 1] (e.g. 0.1307, or "
                      "0.485,0.456,0.406); default: ddad_jax's for the dataset")
    flags.DEFINE_list("std", None, "the teacher's input std per channel (e.g. 0.3081); default: ddad_jax's")
    flags.DEFINE_integer("resize", None, "the teacher saw the images resized bilinearly to this square size")
    flags.DEFINE_integer("pad", None, "the teacher saw the images zero-padded, centred, to this square size")
    flags.DEFINE_integer("test_examples", None, "measure the accuracy on the test split's first N images (default all)")
    flags.DEFINE_bool("force", False, "replace OUT's teacher/ and teacher.json if OUT exists")
    flags.DEFINE_string("data_dir", None, "tfds data dir holding the prepared test split "
                        "(default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")


def _floats(values, flag: str):
    """A comma-separated flag's floats (None when not given)."""
    if values is None:
        return None
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise UserError(f"{flag} takes numbers separated by commas, got {','.join(values)}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax's INFO lines on saving
    try:
        missing = [f"--{n}" for n in ("state_dict", "model", "dataset", "out") if not getattr(FLAGS, n)]
        if missing:
            raise UserError(f"{', '.join(missing)} required, e.g. --state_dict=resnet34.pt --model=resnet34 "
                            "--dataset=cifar10 --out=teachers/resnet34")
        spec = teacher_spec(FLAGS.dataset, _floats(FLAGS.mean, "--mean"), _floats(FLAGS.std, "--std"),
                            FLAGS.resize, FLAGS.pad)
        if FLAGS.test_examples is not None and FLAGS.test_examples < 1:
            raise UserError(f"--test_examples must be at least 1, got {FLAGS.test_examples}")
        card = import_teacher(FLAGS.state_dict, FLAGS.model, FLAGS.dataset, FLAGS.out, FLAGS.force, FLAGS.data_dir,
                              spec, FLAGS.test_examples)
    except UserError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        sys.exit(2)
    acc = card["test_acc"]
    print(f"imported {card['model']} for {card['dataset']}: "
          + (f"test accuracy {acc:.4f} on {card['test_examples']} images" if acc is not None
             else f"test accuracy {card['test_acc_note']}"))
    if acc is not None and acc < NEAR_CHANCE / spec.num_classes:
        print(f"warning: near chance; was it trained on inputs preprocessed like this: "
              f"{data.describe_preprocessing(spec)}? If not, state its own with --mean, --std and --resize or "
              "--pad", file=sys.stderr)
    print(f"wrote {os.path.join(FLAGS.out, 'teacher')}/ and teacher.json; distil it with "
          f"--config.teacher_dir={FLAGS.out} --config.teacher={card['model']}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
