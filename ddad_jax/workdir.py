"""What a run's workdir holds, and writing files there so that a kill loses nothing.

* ``guard_workdir``: the record (``run.json``) of which run a workdir holds, compared on
  every resume; a different run is refused before anything is changed. A teacher enters that
  record by its ``variables_fingerprint``.
* ``write_atomically``: a file replaced through a temporary file and a rename, so a kill
  (SIGKILL, power loss, a full disk) leaves the old content or the new, never a torn file;
  a torn ``run.json`` (an older version's) is rewritten with a warning.

The checkpoints themselves (orbax) are ``checkpoints.py``'s. In a multi-process run every
process calls these functions alike, on a workdir they share; the plain files (``run.json``,
summaries, exports) are written by process 0 alone.
"""

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from typing import Any, Optional

import jax
import numpy as np

from ddad_jax import parallel
from ddad_jax.errors import UserError, reason

RUN_RECORD = "run.json"


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
        raise UserError(f"cannot create --workdir {workdir} ({e.strerror or reason(e)})") from None


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
        raise UserError(f"cannot write {path} ({e.strerror or reason(e)})") from None


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
        why = reason(e)
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or reason(e)})") from None
    print(f"warning: {path} is unreadable ({why}); rewriting it for this run", file=sys.stderr, flush=True)
    return None
