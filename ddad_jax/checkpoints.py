"""Orbax checkpoints in a run's workdir: the periodic train state, and standalone variables.

A run can be killed at any moment (SIGKILL, power loss, a full disk) and rerun with the
same command; what is on disk must then resume it, and nothing already there may be lost:

* orbax writes a checkpoint into a temporary directory and renames it when complete, so a
  kill mid-save leaves no half-checkpoint under its step's name (the temporary directory
  is removed at the next start);
* a checkpoint that is nevertheless unreadable (a truncated or deleted file, garbage in
  its metadata) is set aside, not deleted, and the run resumes from the newest intact one.

``restore_latest`` reads a finished run's last checkpoint as it was saved, changing nothing
(the export's way in). The record of which run a workdir holds (``run.json``) and the atomic
writes of plain files are ``workdir.py``'s.

In a multi-process run every process calls these functions alike, on a workdir they share:
orbax has each write its part of a checkpoint.
"""

import contextlib
import gc
import os
import sys
from typing import Any, List, Optional, Sequence, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from ddad_jax import parallel
from ddad_jax.workdir import absolute, path as as_path
from ddad_jax.errors import UserError, reason


@contextlib.contextmanager
def _quiet_orbax():
    """Keeps a failed read of a corrupt checkpoint from printing pages to stderr: orbax logs
    the garbage it could not parse (absl ERROR), and its abandoned read coroutines report
    their exceptions again when collected ("Exception ignored in ..."). The caller reports
    the failure itself, in one line."""
    verbosity, hook = absl_logging.get_verbosity(), sys.unraisablehook
    absl_logging.set_verbosity(absl_logging.FATAL)
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()  # collect the abandoned coroutines while their reports are still muted
        sys.unraisablehook = hook
        absl_logging.set_verbosity(verbosity)


class Checkpointer:
    """Periodic saves of a whole train state (a pytree); restores the newest readable one."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = absolute(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               cleanup_tmp_directories=True)  # saves a kill cut short
        with _quiet_orbax():  # garbage in a step's metadata is logged here, and handled in restore
            self._manager = ocp.CheckpointManager(self.directory, options=options,
                                                  item_handlers=ocp.StandardCheckpointHandler())

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def restore(self, target: Any) -> Optional[Any]:
        """The newest saved state shaped like ``target``, or None if nothing was saved.

        A checkpoint that cannot be read at all (truncated, deleted or garbled files) is
        moved to ``<directory>.unreadable/<step>`` with a one-line warning on stderr, and
        the next older one is tried: orbax would otherwise keep counting it as the latest
        step and skip saves up to it. A readable checkpoint that does not fit ``target``
        (another architecture or optimiser: a config mismatch) is a UserError, as is having
        no readable checkpoint at all; in both cases nothing is moved.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        unreadable: List[Tuple[int, str]] = []
        for step in steps:
            restored, problem, fits = self._try_restore(step, abstract)
            if restored is not None:
                self._set_aside(unreadable, step)
                return restored
            if not fits:
                raise UserError(f"checkpoint {self.directory}/{step} does not fit this configuration "
                                f"({problem}); use a new --workdir")
            unreadable.append((step, problem))
        listed = "; ".join(f"{self.directory}/{s}: {why}" for s, why in unreadable)
        raise UserError(f"no readable checkpoint ({listed}); move {self.directory} away or use a new "
                        "--workdir to start over")

    def _try_restore(self, step: int, abstract: Any) -> Tuple[Optional[Any], str, bool]:
        """(state or None, what went wrong, whether the checkpoint may fit ``abstract``)."""
        with _quiet_orbax():
            try:
                restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # pylint: disable=broad-except
                # orbax and tensorstore raise ValueError, JSONDecodeError (a ValueError), OSError
                # or a bare Exception for a corrupt checkpoint as well as for a mismatched target:
                # the checkpoint is "unreadable" only if it cannot be read as it was saved either.
                return None, reason(e), not self._readable_as_saved(step)
        try:
            return _check_fits(restored, abstract), "", True
        except ValueError as e:
            return None, reason(e), False

    def _readable_as_saved(self, step: int) -> bool:
        """Whether checkpoint ``step`` restores into its own recorded shapes and dtypes, on one
        device (a target without shardings would need the devices it was saved from)."""
        try:
            _restore_as_saved(self._manager, step)
            return True
        except Exception:  # pylint: disable=broad-except
            return False

    def _set_aside(self, unreadable: Sequence[Tuple[int, str]], resumed_from: int) -> None:
        """Moves unreadable checkpoints out of orbax's sight (kept, never deleted)."""
        for step, why in unreadable:
            src = os.path.join(self.directory, str(step))
            dest = os.path.join(self.directory + ".unreadable", str(step))
            suffix = 1
            while as_path(dest).exists():  # the same step may go bad again after a rerun
                dest, suffix = os.path.join(self.directory + ".unreadable", f"{step}.{suffix}"), suffix + 1
            try:
                as_path(dest).parent.mkdir(parents=True, exist_ok=True)
                as_path(src).rename(dest)
                kept = f"it is kept in {dest}"
            except OSError as e:
                raise UserError(f"checkpoint {src} is unreadable ({why}), and moving it aside failed "
                                f"({reason(e)}); move it away by hand to resume from {resumed_from}") from None
            print(f"warning: checkpoint {src} is unreadable ({why}); resuming from {resumed_from} ({kept})",
                  file=sys.stderr, flush=True)
        if unreadable:
            self._manager.reload()

    def save(self, step: int, state: Any) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _restore_as_saved(manager: ocp.CheckpointManager, step: int) -> Any:
    """Checkpoint ``step`` restored into its own recorded shapes and dtypes, on this process's
    first device (a target without shardings would need the devices it was saved from)."""
    return manager.restore(step, args=ocp.args.StandardRestore(_as_saved(manager.item_metadata(step).tree)))


def _as_saved(tree_metadata: Any) -> Any:
    """A restore target with a checkpoint's own shapes and dtypes (its ``tree`` metadata), on
    this process's first device."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding) if hasattr(m, "dtype") else m,
        tree_metadata)


def restore_latest(directory: str) -> Optional[Tuple[int, Any]]:
    """(step, state) of the newest checkpoint in ``directory`` (a ``Checkpointer``'s), restored as
    it was saved -- nested dicts of numpy arrays, whatever devices saved it, so no config or
    data is needed to read it -- or None when there is none. Read-only: nothing in ``directory``
    is created, moved or cleaned up. UserError when it cannot be read."""
    directory = absolute(directory)
    with _quiet_orbax():  # orbax also warns that a read-only manager saves nothing
        try:
            options = ocp.CheckpointManagerOptions(create=False, read_only=True)
            manager = ocp.CheckpointManager(directory, options=options, item_handlers=ocp.StandardCheckpointHandler())
        except Exception as e:  # pylint: disable=broad-except
            raise UserError(f"cannot read the checkpoints in {directory} ({reason(e)})") from None
        step = None
        try:
            step = manager.latest_step()
            if step is None:
                return None
            state = _restore_as_saved(manager, step)
        except Exception as e:  # pylint: disable=broad-except
            which = "the latest checkpoint in " + directory if step is None else f"checkpoint {directory}/{step}"
            raise UserError(f"cannot read {which} ({reason(e)})") from None
        finally:
            manager.close()
    return int(step), jax.device_get(state)


def save_variables(path: str, variables: Any) -> None:
    """Writes a model's variables (e.g. an exported teacher) as one standalone checkpoint.
    An existing one at ``path`` is replaced only once the new one is complete, so a kill
    mid-write leaves the old export (or none), never a half-written one. With several
    processes all of them call it (orbax saves collectively); process 0 moves the files."""
    path = absolute(path)
    new, old = as_path(path + ".new"), as_path(path + ".old")
    primary = parallel.is_primary()
    if primary:
        _remove_tree(new)
    _barrier(f"save_variables {new}")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.fspath(new), variables, force=True)
    if primary:
        if as_path(path).exists():
            _remove_tree(old)
            as_path(path).rename(old)
        new.rename(path)
        _remove_tree(old)
    _barrier(f"save_variables {path}")


def _remove_tree(directory) -> None:
    """Removes ``directory`` (an epath.Path) and everything in it, if it exists."""
    if directory.exists():
        directory.rmtree()


def _barrier(name: str) -> None:
    """Waits for every process of a multi-process run to get here (nothing with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        multihost_utils.sync_global_devices(name)


def load_variables(path: str, target: Any) -> Any:
    """The variables saved at ``path``, which must have ``target``'s structure and shapes
    (``target`` may be abstract, e.g. from ``jax.eval_shape``); ValueError otherwise."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as ckptr:
        return _check_fits(ckptr.restore(absolute(path), abstract), abstract)


def load_variables_as_saved(path: str) -> Any:
    """The variables saved at ``path`` (``save_variables``), as numpy arrays in their saved
    shapes and dtypes: what copying them elsewhere needs, with no model to shape them."""
    with ocp.StandardCheckpointer() as ckptr:
        target = _as_saved(ckptr.metadata(absolute(path)).item_metadata.tree)
        return jax.device_get(ckptr.restore(absolute(path), target))


def _check_fits(restored: Any, abstract: Any) -> Any:
    """``restored`` if its structure and shapes are ``abstract``'s, else ValueError: orbax
    gives an abstract target's leaves the saved shapes (from ``jax.eval_shape``, say)."""
    def check(key, got, want):  # leaves may also be Python scalars (shape ())
        got, want = getattr(got, "shape", ()), getattr(want, "shape", ())
        if got != want:
            raise ValueError(f"{jax.tree_util.keystr(key)} has shape {got}, expected {want}")
    jax.tree_util.tree_map_with_path(check, restored, abstract)  # a structure mismatch raises too
    return restored
