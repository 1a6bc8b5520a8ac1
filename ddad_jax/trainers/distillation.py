"""The skeleton every data-free distillation run shares (DDAD and the DDAD-shaped DAFL, DFAD,
DFQ and DDAD+; the inversion methods DeepInversion, CMI and Fast): the frozen teacher loaded
and checked against the generator terms, its accuracy where there is a test split, the
summary's common keys, evaluation (test accuracy, or agreement with the teacher on generated
images without a test split), the workdir identity and the exported student. Each method's
trainer adds only its states, its jitted step and what its summary adds."""

import dataclasses
from typing import Any, Callable, Dict, Optional

import jax

from ddad_jax import data, models, objectives, parallel, state as state_lib, teacher as teacher_lib, workdir as workdir_lib
from ddad_jax.evaluation import EvalSet, evaluate
from ddad_jax.export import card as card_lib
from ddad_jax.trainers.common import (AGREEMENT, Run, dataset_spec, eval_set as make_eval_set, eval_summary,
                                      identity, require_batchnorm, teacher_line)


@dataclasses.dataclass
class Setup:
    """What a distillation run knows before its own states are built."""
    config: Any
    method: str  # names the run's progress lines and summary
    spec: data.DatasetSpec
    mesh: jax.sharding.Mesh
    teacher_model: Any  # its BatchNorm statistics reduced over parallel.BATCH_AXIS
    teacher_vars: Dict[str, Any]  # on the host (a trainer replicates them for its step)
    teacher_meta: Dict[str, Any]  # the teacher's card
    terms: tuple  # the generator's objectives.Term's
    eval_set: Optional[EvalSet]  # None: no test split, agreement with the teacher instead
    teacher_acc: Optional[float]


def setup(config, method: str) -> Setup:
    """Spec, mesh and the frozen teacher, refused when the ``bn`` term has nothing to match;
    the teacher's test accuracy, said on one line before anything runs."""
    spec = dataset_spec(config)
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    teacher_model, teacher_vars, teacher_meta = teacher_lib.load_teacher(
        config.teacher_dir, config.teacher, config.dataset, bn_axis_name=parallel.BATCH_AXIS, spec=spec)
    terms = objectives.parse_terms(config.generator_terms)
    require_batchnorm(teacher_vars, terms, config.teacher)
    eval_set = make_eval_set(config, spec, mesh, optional=True, evaluated={
        f"teacher {config.teacher}": teacher_model.clone(bn_axis_name=None),
        f"student {config.student}": models.get_classifier(config.student, spec.num_classes)})
    teacher_acc = evaluate(teacher_model, teacher_vars, eval_set) if eval_set else None
    print(f"[{method}] {teacher_line(config, spec, teacher_acc)}", flush=True)
    return Setup(config, method, spec, mesh, teacher_model, teacher_vars, teacher_meta, terms, eval_set, teacher_acc)


def summary(s: Setup, last_eval: Dict[str, float], wall_s: float, **extra) -> dict:
    """The summary keys every distillation run writes, with the method's own ``extra``."""
    c = s.config
    return {"method": s.method, "dataset": c.dataset, "teacher": c.teacher,
            "teacher_dir": workdir_lib.absolute(c.teacher_dir), "teacher_acc": s.teacher_acc, "student": c.student,
            **eval_summary(last_eval), "generator_terms": objectives.terms_summary(s.terms), **extra,
            "wall_s": wall_s, "devices": s.mesh.size}


def run(s: Setup, *, state, place: Callable, step: Callable, total_steps: int, student_eval,
        agreement: Optional[Callable[[Any], float]], summarize: Callable, report: Callable, phase: Callable,
        sample: Optional[Callable], generator_card: Optional[dict] = None) -> Run:
    """The ``Run``: ``student_eval`` is the student network evaluation runs (float32),
    ``agreement(state)`` what is reported without a test split."""
    c = s.config
    return Run(
        name=s.method, state=state, place=place, step=step, total_steps=total_steps,
        steps_per_epoch=c.iters_per_epoch,
        identity=identity(c, teacher_fingerprint=workdir_lib.variables_fingerprint(jax.device_get(s.teacher_vars))),
        evaluate=lambda st: {AGREEMENT: agreement(st)} if s.eval_set is None else {
            "test/student_accuracy": evaluate(student_eval, state_lib.variables_of(st.student), s.eval_set),
            "test/teacher_accuracy": s.teacher_acc},
        summarize=summarize, report=report, phase=phase, sample=sample, class_names=s.spec.class_names,
        export=lambda workdir, st, summ: card_lib.save_student(workdir, state_lib.variables_of(st.student), summ, s.spec,
                                                               generator=generator_card),
        log_every=c.log_every, checkpoint_every=c.checkpoint_every)
