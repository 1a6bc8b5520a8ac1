"""Config -> everything a run needs, validated before anything is written to disk.

``build(config)`` checks every field's range, loads the teacher and the data, creates the
networks, states and jitted steps, and returns a ``Run``: what ``loop.train`` drives. A
config a run cannot use fails here, as one ``UserError`` line, with the workdir untouched.

One module per kind of run (``teacher``, ``ddad``, ``kd``, ``hidfd``, ``inversion``), each a
``build_<kind>(config) -> Run``; ``common`` holds what they share.
"""

from ddad_jax.trainers.common import (FIELD_RULES, NOT_TRAJECTORY, RUN_FIELDS, Run, compute_dtype, identity, kd_params, train_subset,
                                   validate)
from ddad_jax.trainers.ddad import (build_ddad, create_ddad_state, generator_schedule, hyper, place_ddad_state,
                                 student_schedule)
from ddad_jax.trainers.hidfd import build_hidfd, real_per_batch
from ddad_jax.trainers.inversion import build_inversion
from ddad_jax.trainers.kd import build_kd
from ddad_jax.trainers.teacher import build_teacher
from ddad_jax.errors import UserError

BUILDERS = {"teacher": build_teacher, "ddad": build_ddad, "kd": build_kd, "hidfd": build_hidfd,
            "inversion": build_inversion}


def build(config) -> Run:
    """The run ``config.kind`` asks for."""
    if config.get("kind") not in BUILDERS:
        raise UserError(f"config kind must be one of {', '.join(BUILDERS)}, got {config.get('kind')!r}")
    validate(config)
    run = BUILDERS[config.kind](config)
    run.time_budget_s = float(config.get("time_budget_s", 0.0))  # the data-free benchmark's equal budgets
    return run


__all__ = ["BUILDERS", "FIELD_RULES", "NOT_TRAJECTORY", "RUN_FIELDS", "Run", "build", "build_ddad", "build_hidfd", "build_inversion", "build_kd", "build_teacher",
           "compute_dtype", "create_ddad_state", "generator_schedule", "hyper", "identity", "kd_params",
           "place_ddad_state", "real_per_batch", "student_schedule", "train_subset", "validate"]
