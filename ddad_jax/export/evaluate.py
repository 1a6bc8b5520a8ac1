"""Scoring an export on a dataset's prepared test split (``--evaluate``): the JAX student and
each ONNX file, after the fact -- a run that had no data is scored by whoever has the split."""

import os
from typing import Dict, Optional, Tuple

import jax
import numpy as np

from ddad_jax import backends, data
from ddad_jax.errors import UserError
from ddad_jax.export import card as card_lib, onnx as onnx_lib


def load_test_split(dataset: str, data_dir: str,
                    spec: Optional[data.DatasetSpec] = None) -> Tuple[np.ndarray, np.ndarray, str]:
    """(normalised float32 test images, labels, where) of ``dataset``'s prepared test split in
    ``data_dir`` ('' = tfds's default), preprocessed as ``spec`` says (the student card's; default:
    the dataset's own); UserError, naming what prepares it, when it is not there."""
    spec = spec or data.get_spec(dataset, data_dir or None)
    try:
        images, labels = data.load_split(spec, "test", data_dir or None)
    except UserError as e:  # ours: names the dataset, the directory and the command that prepares it
        raise UserError(f"--evaluate: {e}") from None
    except Exception as e:  # pylint: disable=broad-except  (tfds: not prepared, unreadable)
        where = data_dir or "tfds's default data dir"
        raise UserError(f"--evaluate: no prepared test split of {dataset} in {where} ({type(e).__name__}); "
                        f"prepare it (python -m ddad_jax.data.prepare {dataset}) or pass --data_dir") from None
    return np.asarray(data.normalize(images, spec), np.float32), np.asarray(labels), data_dir or "tfds default"


def exported_logits(directory: str, card: dict, x: np.ndarray) -> Dict[str, np.ndarray]:
    """Logits on ``x`` of the student in ``directory`` (``"jax"``) and of each ONNX file the
    card's ``exports`` name there (``"onnx_fp32"``, ``"onnx_int8"``)."""
    model = card_lib.student_model(card, backends.PLAIN)
    variables = card_lib.load_variables(directory, model, card)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    logits = {"jax": np.concatenate([np.asarray(apply(variables, x[i:i + 1000])) for i in range(0, len(x), 1000)])}
    for key, entry in card.get("exports", {}).items():
        logits[key] = onnx_lib.onnx_logits(onnx_lib.session(os.path.join(directory, entry["file"])), x)
    return logits


def accuracies(directory: str, card: dict, test_set: Tuple[np.ndarray, np.ndarray, str]) -> Dict:
    """The card's ``test_accuracy``: ``examples``, ``data_dir`` and each exported model's
    accuracy (``jax``, ``onnx_fp32``, ``onnx_int8``) on ``test_set`` (``load_test_split``'s)."""
    x, labels, where = test_set
    accuracy = {k: float(np.mean(z.argmax(-1) == labels)) for k, z in exported_logits(directory, card, x).items()}
    return {"examples": int(len(labels)), "data_dir": where, **accuracy}
