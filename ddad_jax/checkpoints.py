"""Orbax checkpoints in a run's workdir, and the record (``run.json``) of what run a workdir holds.

A run can be killed at any moment (SIGKILL, power loss, a full disk) and rerun with the
same command; what is on disk must then resume it, and nothing already there may be lost:

* orbax writes a checkpoint into a temporary directory and renames it when complete, so a
  kill mid-save leaves no half-checkpoint under its step's name (the temporary directory
  is removed at the next start);
* a checkpoint that is nevertheless unreadable (a truncated or deleted file, garbage in
  its metadata) is set aside, not deleted, and the run resumes from the newest intact one;
* ``run.json`` is replaced atomically; a torn one is rewritten with a warning.

In a multi-process run every process calls these functions alike, on a workdir they share:
orbax has each write its part of a checkpoint, and the plain files (``run.json``, summaries,
exports) are written by process 0 alone.
"""

import contextlib
import gc
import hashlib
import json
import os
import shutil
import sys
import tempfile
from typing import Any, List, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from ddad_jax import parallel
from ddad_jax.errors import UserError

RUN_RECORD = "run.json"


def _reason(e: BaseException) -> str:
    """An exception as a short one-line reason."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__


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
        self.directory = os.path.abspath(directory)
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
                return None, _reason(e), not self._readable_as_saved(step)
        try:
            return _check_fits(restored, abstract), "", True
        except ValueError as e:
            return None, _reason(e), False

    def _readable_as_saved(self, step: int) -> bool:
        """Whether checkpoint ``step`` restores into its own recorded shapes and dtypes, on one
        device (a target without shardings would need the devices it was saved from)."""
        try:
            sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            saved = self._manager.item_metadata(step).tree
            as_saved = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding) if hasattr(m, "dtype") else m,
                saved)
            self._manager.restore(step, args=ocp.args.StandardRestore(as_saved))
            return True
        except Exception:  # pylint: disable=broad-except
            return False

    def _set_aside(self, unreadable: Sequence[Tuple[int, str]], resumed_from: int) -> None:
        """Moves unreadable checkpoints out of orbax's sight (kept, never deleted)."""
        for step, why in unreadable:
            src = os.path.join(self.directory, str(step))
            dest = os.path.join(self.directory + ".unreadable", str(step))
            suffix = 1
            while os.path.exists(dest):  # the same step may go bad again after a rerun
                dest, suffix = os.path.join(self.directory + ".unreadable", f"{step}.{suffix}"), suffix + 1
            try:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.replace(src, dest)
                kept = f"it is kept in {dest}"
            except OSError as e:
                raise UserError(f"checkpoint {src} is unreadable ({why}), and moving it aside failed "
                                f"({_reason(e)}); move it away by hand to resume from {resumed_from}") from None
            print(f"warning: checkpoint {src} is unreadable ({why}); resuming from {resumed_from} ({kept})",
                  file=sys.stderr, flush=True)
        if unreadable:
            self._manager.reload()

    def save(self, step: int, state: Any) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def save_variables(path: str, variables: Any) -> None:
    """Writes a model's variables (e.g. an exported teacher) as one standalone checkpoint.
    An existing one at ``path`` is replaced only once the new one is complete, so a kill
    mid-write leaves the old export (or none), never a half-written one. With several
    processes all of them call it (orbax saves collectively); process 0 moves the files."""
    path = os.path.abspath(path)
    new, old = path + ".new", path + ".old"
    primary = parallel.is_primary()
    if primary:
        shutil.rmtree(new, ignore_errors=True)
    _barrier(f"save_variables {new}")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(new, variables, force=True)
    if primary:
        if os.path.exists(path):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    _barrier(f"save_variables {path}")


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


def variables_fingerprint(variables: Any) -> str:
    """A short stable hash of a pytree of arrays (e.g. a teacher's variables), to record which
    teacher a run distils: sha256 over every leaf's tree path, dtype, shape and bytes, in
    tree-path order; its first 16 hex digits. Equal values give equal fingerprints across
    processes and devices; changing any value, shape, dtype or name changes it."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        value = np.asarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())  # C order, whatever the array's layout
    return digest.hexdigest()[:16]


def _canonical(value: Any) -> str:
    """A value as run.json records it, as text: tuples and lists compare equal, and NaN
    equals NaN (as a float it would never match itself)."""
    return json.dumps(value, sort_keys=True, default=str)


def _make_workdir(workdir: str) -> None:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir {workdir} is a file, not a directory; pick another --workdir")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --workdir {workdir} ({e.strerror or _reason(e)})") from None


def write_atomically(path: str, text: str) -> None:
    """Writes ``path`` through a temporary file and a rename: a kill leaves the old or the
    new content, never a torn file. With several processes only process 0 writes (every
    process has the same ``text``: it describes the one run they make together)."""
    if not parallel.is_primary():
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def guard_workdir(workdir: str, identity: dict) -> None:
    """Creates ``workdir`` if needed and records in its ``run.json`` what run it holds;
    refuses (UserError, nothing changed) to continue a different run there.

    Every key of ``identity`` (JSON-able values: seed, batch size, learning rates, steps,
    architectures, a teacher's ``variables_fingerprint``...) must equal what ``run.json``
    recorded; a key recorded on one side only is a difference too. The caller chooses the
    keys: those that a checkpoint in ``workdir`` must agree with to be resumed.

    A ``run.json`` that cannot be parsed (a write torn by an older version, garbage) is
    rewritten for this run with a warning: the checkpoints' own shape check still refuses
    a state of another architecture.
    """
    _make_workdir(workdir)
    path = os.path.join(workdir, RUN_RECORD)
    wanted = json.loads(_canonical(identity))
    recorded = _read_record(path)
    if recorded is not None:
        for k in list(wanted) + [k for k in recorded if k not in wanted]:
            if k in wanted and k in recorded and _canonical(wanted[k]) == _canonical(recorded[k]):
                continue
            if k not in recorded:
                what = f"that did not record {k} (this run has {k}={wanted[k]!r})"
            elif k not in wanted:
                what = f"with {k}={recorded[k]!r}, which this run does not set"
            else:
                what = f"with {k}={recorded[k]!r}, not {wanted[k]!r}"
            raise UserError(f"--workdir {workdir} holds a run {what}; use a new --workdir, "
                            f"or remove {workdir} to start over (nothing was changed)")
        return
    try:
        write_atomically(path, json.dumps(wanted, indent=2) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror or _reason(e)})") from None


def _read_record(path: str) -> Optional[dict]:
    """run.json's content; None if absent or unparsable (then with a warning)."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            recorded = json.loads(f.read().decode("utf-8"))
        if isinstance(recorded, dict):
            return recorded
        why = f"a JSON {type(recorded).__name__}, not an object"
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        why = _reason(e)
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or _reason(e)})") from None
    print(f"warning: {path} is unreadable ({why}); rewriting it for this run", file=sys.stderr, flush=True)
    return None
