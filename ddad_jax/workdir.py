"""What a run's workdir holds, and writing files there so that a kill loses nothing.

* ``guard_workdir``: the record (``run.json``) of which run a workdir holds, compared on
  every resume; a different run is refused before anything is changed. A teacher enters that
  record by its ``variables_fingerprint``.
* ``locked``: one run per workdir at a time. A lock file (``run.lock``: process id, host,
  start time) is created before anything else is written; a second launch into the same
  workdir (a scheduler's retry while the first attempt runs) is refused naming the holder; a
  lock whose holder is gone (killed on this host) is taken over with a warning.
* ``write_atomically``: a file replaced through a temporary file and a rename, so a kill
  (SIGKILL, power loss, a full disk) leaves the old content or the new, never a torn file;
  a torn ``run.json`` (an older version's) is rewritten with a warning.

Workdirs and teacher directories may be cloud storage (``gs://bucket/run``: etils' epath
through fsspec/gcsfs for plain files, orbax through tensorstore for checkpoints; ``pip install
'ddad_jax[gcs]'``). ``path``/``absolute``/``is_remote`` are how the rest of the library names
such locations. On a bucket, a write is one object upload (readers see the old object or the
new, never a torn one) and an append rewrites the object: there is no append on GCS.

The checkpoints themselves (orbax) are ``checkpoints.py``'s. In a multi-process run every
process calls these functions alike, on a workdir they share; the plain files (``run.json``,
summaries, exports) are written by process 0 alone.
"""

import contextlib
import datetime
import hashlib
import json
import os
import socket
import sys
import tempfile
from typing import Any, Iterator, Optional

import jax
import numpy as np
from etils import epath

from ddad_jax import parallel
from ddad_jax.errors import UserError, reason

RUN_RECORD = "run.json"
LOCK = "run.lock"


def is_remote(location: Any) -> bool:
    """Whether ``location`` names cloud storage (``gs://...``, ``s3://...``), not a local path."""
    return "://" in os.fspath(location)


def absolute(location: str) -> str:
    """``location`` as an absolute path; a cloud storage URI as it is (``os.path.abspath`` would
    turn ``gs://b/run`` into ``$PWD/gs:/b/run``)."""
    return location if is_remote(location) else os.path.abspath(location)


def path(location: Any) -> epath.Path:
    """An ``epath.Path`` for ``location``, local or cloud storage; UserError when the file system
    library its scheme needs is not installed (gcsfs for ``gs://``)."""
    location = os.fspath(location)
    if is_remote(location):
        scheme = location.split("://", 1)[0]
        try:
            import fsspec  # pylint: disable=import-outside-toplevel
            fsspec.get_filesystem_class(scheme)
        except (ImportError, ValueError) as e:
            raise UserError(f"{location}: {scheme}:// paths need their fsspec file system ({reason(e)}); "
                            "pip install 'ddad_jax[gcs]' for gs://") from None
    return epath.Path(location)


def append_text(location: str, text: str) -> None:
    """Appends ``text`` to the file at ``location`` (created if absent). On cloud storage, which
    has no append, the object is rewritten whole (fine for a metrics log's few hundred lines)."""
    if not is_remote(location):
        with open(location, "a") as f:
            f.write(text)
        return
    p = path(location)
    p.write_text((p.read_text() if p.exists() else "") + text)


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
    p = path(workdir)
    if p.exists() and not p.is_dir():
        raise UserError(f"--workdir {workdir} is a file, not a directory; pick another --workdir")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --workdir {workdir} ({e.strerror or reason(e)})") from None


def write_atomically(target: str, text: str) -> None:
    """Writes ``target`` through a temporary file and a rename: a kill leaves the old or the
    new content, never a torn file. With several processes only process 0 writes (every
    process has the same ``text``: it describes the one run they make together)."""
    if not parallel.is_primary():
        return
    if is_remote(target):  # one object upload: all or nothing
        path(target).write_text(text)
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target) or ".", prefix=f".{os.path.basename(target)}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, target)
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
    record = os.path.join(workdir, RUN_RECORD)
    wanted = json.loads(_canonical(identity))
    recorded = _read_record(record)
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
        write_atomically(record, json.dumps(wanted, indent=2) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {record} ({e.strerror or reason(e)})") from None


def _read_record(record: str) -> Optional[dict]:
    """run.json's content; None if absent or unparsable (then with a warning)."""
    p = path(record)
    if not p.exists():
        return None
    try:
        recorded = json.loads(p.read_bytes().decode("utf-8"))
        if isinstance(recorded, dict):
            return recorded
        why = f"a JSON {type(recorded).__name__}, not an object"
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        why = reason(e)
    except OSError as e:
        raise UserError(f"cannot read {record} ({e.strerror or reason(e)})") from None
    print(f"warning: {record} is unreadable ({why}); rewriting it for this run", file=sys.stderr, flush=True)
    return None


# --- one run per workdir ---------------------------------------------------------------------

def _process_start(pid: int) -> Optional[str]:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None: with the pid,
    it tells a live holder from a new process that reuses a dead holder's pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_alive(holder: dict) -> Optional[bool]:
    """Whether the process a lock names still runs: True/False on this host, None (unknown)
    for another host's."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return None
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    recorded, now = holder.get("process_start"), _process_start(holder["pid"])
    return recorded is None or now is None or recorded == now


def _describe(holder: dict) -> str:
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} since "
            f"{holder.get('started', '?')}")


def _create_lock(lock: str, me: dict) -> Optional[dict]:
    """Creates ``lock`` holding ``me``; None when created, else what the existing lock holds
    ({} if it cannot be read). Local: O_EXCL, so of two launches exactly one creates it. On a
    bucket (no exclusive create through gcsfs): check, then write -- a narrow race left open."""
    text = json.dumps(me) + "\n"
    if is_remote(lock):
        p = path(lock)
        if p.exists():
            return _read_lock(lock)
        p.write_text(text)
        return None
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return _read_lock(lock)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return None


def _read_lock(lock: str) -> dict:
    try:
        holder = json.loads(path(lock).read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}  # being written right now, or torn by a kill


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds ``workdir``'s lock (``run.lock``) for the block: the workdir is created if needed,
    then the lock, before anything else is written. UserError naming the holder when another
    live run holds it; a lock left by a process that is gone (this host) is taken over with a
    warning. With several processes, process 0 takes the lock for all, and all of them stop
    when it cannot."""
    _make_workdir(workdir)
    lock = os.path.join(workdir, LOCK)
    holder = None
    if parallel.is_primary():
        me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "argv": sys.argv}
        holder = _create_lock(lock, me)
        if holder is not None and _holder_alive(holder) is False:
            print(f"warning: {lock} was left by {_describe(holder)}, which is gone; taking it over",
                  file=sys.stderr, flush=True)
            with contextlib.suppress(FileNotFoundError):
                path(lock).unlink()
            holder = _create_lock(lock, me)  # None, unless a third launch took it in between
    if not parallel.same_on_all_processes(holder is None):
        held_by = _describe(holder) if holder else "another run (process 0 could not take the lock)"
        raise UserError(f"--workdir {workdir} is in use by {held_by} (lock {lock}); wait for it to finish, use "
                        f"another --workdir, or remove {lock} if that run is gone (nothing was changed)")
    try:
        yield
    finally:
        if parallel.is_primary() and _read_lock(lock).get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                path(lock).unlink()
