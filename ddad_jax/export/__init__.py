"""The distilled student out of a run: orbax + json card, ONNX, int8 calibrated on synthetic images.

Every finished distillation run (DDAD and the DDAD-shaped DAFL/DFAD/DFQ, the inversion
family, KD) leaves its final student next to its checkpoints, ready to ship: ``RUN/student/``
(its variables, a standalone orbax checkpoint) and ``RUN/student.json`` (its card).
``export_student`` (CLI: ``python -m ddad_jax.export --run=RUN --out=DIR [--onnx] [--int8]
[--evaluate [--data_dir=D]]``) copies both into DIR and, on request, writes
``student_fp32.onnx`` and ``student_int8.onnx``, the latter calibrated on images of the
run's own final generator (a data-free run has no real images, and needs none).

One job per module:

* ``card``: the student card -- what ``save_student`` writes at a run's end and
  ``load_student`` reads back, including what rebuilds the run's generator;
* ``run``: reading a finished run -- its record, its student, its generator's images;
* ``onnx``: ONNX fp32 and int8 files, the int8 calibration reader;
* ``evaluate``: ``--evaluate``, each exported model on the dataset's test split;
* ``stage``: ``export_student``, written next to ``--out`` and moved in when complete;
* ``cli`` (and ``__main__``): the command line.

onnx, onnxruntime and jax2onnx are the optional ``export`` extra; they are imported only
when ONNX is asked for.
"""

from ddad_jax.export.card import load_student, save_student
from ddad_jax.export.stage import export_student

__all__ = ["export_student", "load_student", "save_student"]
