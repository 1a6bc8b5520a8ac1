"""Orbax checkpoints in a run's workdir, and a guard against mixing runs in one workdir."""

import json
import os
from typing import Any, Optional, Sequence

import jax
import orbax.checkpoint as ocp

from ddad_jax.errors import UserError


class Checkpointer:
    """Periodic saves of a whole train state (a pytree); restores the latest."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def restore(self, target: Any) -> Optional[Any]:
        """The latest saved state shaped like ``target``, or None if there is none."""
        step = self.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            return _check_fits(self._manager.restore(step, args=ocp.args.StandardRestore(abstract)), abstract)
        except (ValueError, KeyError) as e:
            raise UserError(f"checkpoint {self.directory}/{step} does not fit this configuration "
                            f"({str(e).splitlines()[0][:200]}); use a new --workdir") from None

    def save(self, step: int, state: Any) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def save_variables(path: str, variables: Any) -> None:
    """Writes a model's variables (e.g. an exported teacher) as one standalone checkpoint."""
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(path), variables, force=True)


def load_variables(path: str, target: Any) -> Any:
    """The variables saved at ``path``, which must have ``target``'s structure and shapes
    (``target`` may be abstract, e.g. from ``jax.eval_shape``); ValueError otherwise."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as ckptr:
        return _check_fits(ckptr.restore(os.path.abspath(path), abstract), abstract)


def _check_fits(restored: Any, abstract: Any) -> Any:
    """``restored`` if its structure and shapes are ``abstract``'s, else ValueError: orbax
    gives an abstract target's leaves the saved shapes (from ``jax.eval_shape``, say)."""
    def check(key, got, want):  # leaves may also be Python scalars (shape ())
        got, want = getattr(got, "shape", ()), getattr(want, "shape", ())
        if got != want:
            raise ValueError(f"{jax.tree_util.keystr(key)} has shape {got}, expected {want}")
    jax.tree_util.tree_map_with_path(check, restored, abstract)  # a structure mismatch raises too
    return restored


def guard_workdir(workdir: str, identity: dict, keys: Sequence[str]) -> None:
    """Records what a workdir holds; refuses to resume a run of another kind there.

    ``identity`` is the run's config (as a dict); ``keys`` are the fields that must match
    for a checkpoint in ``workdir`` to be resumable (architectures, dataset, method...).
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "run.json")
    wanted = {k: identity.get(k) for k in keys}
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)
        diff = {k: (recorded.get(k), v) for k, v in wanted.items() if recorded.get(k) != v}
        if diff:
            k, (old, new) = next(iter(diff.items()))
            raise UserError(f"workdir {workdir} holds a run with {k}={old!r}, not {new!r}; "
                            "use a new --workdir (nothing was changed)")
        return
    with open(path, "w") as f:
        json.dump(wanted, f, indent=2)
