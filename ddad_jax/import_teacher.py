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
"""

import os
import sys

from absl import app, flags, logging

from ddad_jax import data
from ddad_jax.errors import UserError

FLAGS = flags.FLAGS

NEAR_CHANCE = 1.5  # a test accuracy under 1.5x chance suggests other input preprocessing


def _measure(model, variables, spec, data_dir):
    """(test accuracy, number of test examples, note): accuracy None with a note when the
    test split cannot be read."""
    from ddad_jax import evaluation  # pylint: disable=import-outside-toplevel
    try:
        images, labels = data.load_split(spec, "test", data_dir, shard_index=0, shard_count=1)
    except UserError as e:
        return None, 0, f"not measured: {e}"
    acc = evaluation.evaluate(model, variables, evaluation.EvalSet.build(images, labels, spec, 500))
    return acc, len(labels), None


def import_teacher(state_dict_path: str, model_name: str, dataset: str, out: str, force: bool = False,
                   data_dir=None) -> dict:
    """Converts, measures and writes the teacher; returns its card. Nothing is written when
    anything is wrong with the input (UserError)."""
    from ddad_jax import models, teacher, torch_import, workdir as workdir_lib  # pylint: disable=import-outside-toplevel

    spec = data.get_spec(dataset)
    if model_name not in models.CLASSIFIERS:
        models.get_classifier(model_name, spec.num_classes)  # the registry's error, with the known names
    target = workdir_lib.path(out)
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {out} is a file; choose a directory")
    if target.exists() and not force:
        raise UserError(f"--out {out} exists; pass --force to replace its {teacher.TEACHER_SUBDIR}/ and "
                        f"{teacher.TEACHER_META}, or choose another --out")
    state_dict = torch_import.read_state_dict(state_dict_path)
    variables = torch_import.convert_state_dict(state_dict, model_name, dataset)
    model = models.get_classifier(model_name, spec.num_classes)
    acc, examples, note = _measure(model, variables, spec, data_dir or data.default_data_dir())
    card = {"model": model_name, "dataset": dataset, "test_acc": acc, "test_examples": examples,
            "source": "pytorch", "state_dict": os.path.abspath(state_dict_path),
            "sha256": torch_import.file_sha256(state_dict_path)}
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
    flags.DEFINE_bool("force", False, "replace OUT's teacher/ and teacher.json if OUT exists")
    flags.DEFINE_string("data_dir", None, "tfds data dir holding the prepared test split "
                        "(default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax's INFO lines on saving
    try:
        missing = [f"--{n}" for n in ("state_dict", "model", "dataset", "out") if not getattr(FLAGS, n)]
        if missing:
            raise UserError(f"{', '.join(missing)} required, e.g. --state_dict=resnet34.pt --model=resnet34 "
                            "--dataset=cifar10 --out=teachers/resnet34")
        card = import_teacher(FLAGS.state_dict, FLAGS.model, FLAGS.dataset, FLAGS.out, FLAGS.force, FLAGS.data_dir)
    except UserError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        sys.exit(2)
    spec = data.get_spec(FLAGS.dataset)
    acc = card["test_acc"]
    print(f"imported {card['model']} for {card['dataset']}: "
          + (f"test accuracy {acc:.4f} on {card['test_examples']} images" if acc is not None
             else f"test accuracy {card['test_acc_note']}"))
    if acc is not None and acc < NEAR_CHANCE / spec.num_classes:
        print(f"warning: near chance; was it trained on inputs preprocessed as ddad_jax does for {spec.name} "
              f"(scaled to [0, 1], {'zero-padded to 32x32, ' if spec.image_size != spec.source_size else ''}"
              f"standardised with mean {spec.mean}, std {spec.std})?", file=sys.stderr)
    print(f"wrote {os.path.join(FLAGS.out, 'teacher')}/ and teacher.json; distil it with "
          f"--config.teacher_dir={FLAGS.out} --config.teacher={card['model']}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
