"""The one training loop: teacher training and distillation alike.

``train_and_evaluate(config, workdir)`` builds the run (``trainers.build``: everything
validated before anything is written), resumes from the workdir's latest intact checkpoint,
then steps to the end with periodic actions -- log, evaluate, sample grid, checkpoint --
in the spirit of clu's periodic actions, and writes ``summary.json`` (and a teacher's
export). A resumed run continues exactly like an uninterrupted one.

Why the loop waits for step n-1 once step n is dispatched: a fast step (supervised KD on
LeNet, ~30 steps/s) otherwise queues a hundred sharded programs between two logs, each with
cross-device all-reduces (BatchNorm statistics, gradients). On a CPU host split into several
XLA devices the few threads then cannot bring all participants of one all-reduce together
in time; XLA:CPU's collective rendezvous times out and aborts the process (seen after ~1 200
KD steps). One step stays in flight, so the host still prepares the next batch while the
devices compute.

With several processes (``docs/multihost.md``) every process runs this loop on the same
workdir, which must be on a file system they share: all of them take part in each step,
evaluation and checkpoint; process 0 alone writes the metrics, sample grids and summary.
"""

import json
import os
import time
from typing import Any, Callable, Dict, List

import jax
import numpy as np

from ddad_jax import trainers
from ddad_jax import checkpoints, diversity, parallel, reporting, state as state_lib, workdir as workdir_lib
from ddad_jax.errors import UserError


# Where a step's metrics come from, in the order it computes them: a NaN spreads from the first
# part that made one to everything after it, so that part is the one to name -- never a
# diagnostic of the synthetic batch computed from it.
_PARTS = (("synth/", "the synthesis of images"), ("gen/", "the generator step"), ("disc/", "the discriminator step"),
          ("scratch/", "the scratch teacher's step"), ("student/", "the student step"), ("", "the training step"),
          ("generated/", "a measure on the generated images"), ("diversity/", "a diagnostic of the synthetic batch"))


_STEP = [prefix for prefix, _ in _PARTS].index("")  # a metric of no listed part (a teacher's ``loss``)


def _part_index(key: str) -> int:
    """``key``'s place in ``_PARTS``."""
    return next((i for i, (prefix, _) in enumerate(_PARTS) if prefix and key.startswith(prefix)), _STEP)


def _computed_order(key: str):
    return _part_index(key), key


def _part(key: str) -> str:
    return _PARTS[_part_index(key)][1]


class Every:
    """A periodic action: ``fn(step, state, metrics)`` every ``n`` steps and at the last one."""

    def __init__(self, n: int, total: int, fn: Callable):
        self.n, self.total, self.fn = n, total, fn

    def __call__(self, step, state, metrics):
        if step % self.n == 0 or step == self.total:
            self.fn(step, state, metrics)


def train(run: trainers.Run, workdir: str) -> dict:
    """Steps ``run`` to its end in ``workdir`` (resuming there), holding the workdir's lock
    (one run at a time); returns the summary."""
    with workdir_lib.locked(workdir):
        return _train(run, workdir)


def _train(run: trainers.Run, workdir: str) -> dict:
    workdir_lib.guard_workdir(workdir, run.identity)
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
    restored = ckpt.restore(run.state)
    state = run.place(restored if restored is not None else run.state)
    start = int(state.step)
    if restored is not None:
        print(f"[{run.name}] resuming from step {start}", flush=True)
    primary = parallel.is_primary()
    reporter = reporting.Reporter(workdir, run.total_steps, start_step=start, writes=primary)
    # seconds an interrupted run had already spent: its last kept record's elapsed_s
    t0, before = time.time(), ([0.0] + [v for _, v in reporter.history("elapsed_s")])[-1]
    elapsed = lambda: before + time.time() - t0
    last_eval: Dict[str, float] = {}
    last_warning: Dict[str, Any] = {}
    student_history: List[float] = []  # this invocation's student test accuracies (the stuck alarm)

    def log(step, state, metrics):
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        bad = sorted((k for k, v in metrics.items() if not np.isfinite(v)), key=_computed_order)
        if bad:
            raise UserError(f"non-finite {bad[0]} at step {step} ({_part(bad[0])}); stopping without saving "
                            "(the last good checkpoint is kept)")
        epoch = (step - 1) // run.steps_per_epoch + 1
        reporter.progress(step, metrics, prefix=f"[{run.name}] {run.phase(step)}epoch {epoch} ")
        reporter.write(step, {**metrics, "elapsed_s": elapsed()})
        warning = diversity.collapse_warning(metrics)
        if warning and warning.split(":")[0] != last_warning.get("kind"):  # said once, when it starts
            print(f"[{run.name}] warning at step {step}: {warning}", flush=True)
        last_warning["kind"] = warning.split(":")[0] if warning else None

    def evaluate(step, state, metrics):
        last_eval.clear()
        last_eval.update(run.evaluate(state))
        if not last_eval:  # nothing to evaluate on (a teacher of a dataset without a test split)
            return
        reporter.write(step, {**last_eval, "elapsed_s": elapsed()})
        if "test/student_accuracy" in last_eval:
            student_history.append(last_eval["test/student_accuracy"])
            stuck = diversity.stuck_student_warning(student_history, last_eval.get("test/teacher_accuracy"))
            if stuck and not last_warning.get("stuck"):  # said once, when it starts
                print(f"[{run.name}] warning at step {step}: {stuck}", flush=True)
            last_warning["stuck"] = stuck is not None
        epoch, epochs = -(-step // run.steps_per_epoch), -(-run.total_steps // run.steps_per_epoch)
        shown = ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in last_eval.items())
        print(f"[{run.name}] epoch {epoch}/{epochs}: {shown} ({elapsed():.0f}s)", flush=True)

    def sample(step, state, metrics):
        epoch = -(-step // run.steps_per_epoch)
        images, labels = run.sample(state)  # on every process: it computes on the devices
        if primary:
            reporting.save_image_grid(os.path.join(workdir, "samples", f"epoch_{epoch:04d}.png"), images, labels=labels,
                                      class_names=run.class_names)

    def save(step, state, metrics):
        if not state_lib.all_finite(state):
            raise UserError(f"non-finite parameters at step {step}; stopping without saving "
                            "(the last good checkpoint is kept)")
        ckpt.save(step, state)

    total, per_epoch = run.total_steps, run.steps_per_epoch
    actions: List[Every] = [Every(run.log_every, total, log), Every(per_epoch, total, evaluate)]
    if run.sample is not None:
        actions.append(Every(per_epoch, total, sample))
    actions.append(Every(run.checkpoint_every or per_epoch, total, save))  # last: after what it covers
    stopped_at = None
    in_flight = None  # the previous step's metrics: at most two steps are queued at once
    try:
        for step in range(start + 1, total + 1):
            state, metrics = run.step(step, state)
            jax.block_until_ready(in_flight)
            in_flight = metrics
            for action in actions:
                action(step, state, metrics)
            if run.time_budget_s and step < total and parallel.same_on_all_processes(elapsed() >= run.time_budget_s):
                # out of time: the final student is this one, evaluated and saved like a last step's
                print(f"[{run.name}] time budget of {run.time_budget_s:.0f}s spent at step {step}/{total}", flush=True)
                for action in actions[1:]:
                    if not (step % action.n == 0):
                        action.fn(step, state, metrics)
                stopped_at = step
                break
    finally:
        ckpt.close()
        reporter.close()
    if not last_eval:  # nothing left to run (a finished run resumed): evaluate what was restored
        last_eval.update(run.evaluate(state))
    summary = run.summarize(state, last_eval, elapsed())
    if stopped_at is not None:
        summary["stopped_at_step"] = stopped_at
    if run.export is not None:
        run.export(workdir, state, summary)
    workdir_lib.write_atomically(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2))  # process 0
    print(f"[{run.name}] done: {run.report(summary)} ({workdir})", flush=True)
    return summary


def train_and_evaluate(config, workdir: str) -> dict:
    """Builds the run ``config`` describes (teacher training or distillation) and trains it."""
    return train(trainers.build(config), workdir)
