"""The shared absl entry: parse ``--config`` and ``--workdir``, dispatch on ``config.kind``.

Every failure a user can fix (bad or missing config file, missing data or teacher, a
workdir of another run, non-finite loss, a full disk...) ends as one ``error: ...`` line on
stderr and exit status 2, and nothing already on disk is lost or overwritten. This module
writes nothing itself: the workdir is created by the run, once its config is validated.
"""

import errno
import re
import sys
from typing import Optional

from absl import app, flags, logging
from ml_collections import config_flags

from ddad_jax import parallel
from ddad_jax.errors import UserError

config_flags.DEFINE_config_file("config", None, "a configs/*.py file, e.g. configs/ddad.py:fashion_mnist",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and samples go (resumes if present)")
# Several processes (hosts) as one run (docs/multihost.md): auto-detected on TPU VMs, SLURM and
# Open MPI; elsewhere give all three, the same address and count to every process.
flags.DEFINE_string("coordinator_address", None, "HOST:PORT where process 0 coordinates a multi-process run")
flags.DEFINE_integer("num_processes", None, "processes in a multi-process run (1 = a single-process run)")
flags.DEFINE_integer("process_id", None, "this process's index in a multi-process run, 0..num_processes-1")
FLAGS = flags.FLAGS


def _config_file_problem(e: BaseException):
    """What is wrong with the ``--config`` file itself, if that is the cause of ``e``, or None.

    ml_collections raises a config file's SyntaxError as it is, and defers an unreadable
    file (missing, a directory...) to the config's first use, as an IOError whose message
    lists every path it tried; either becomes one short line here."""
    for cause in (e, e.__cause__, e.__context__):
        if isinstance(cause, SyntaxError):
            return (f"--config file {cause.filename} has a syntax error at line {cause.lineno}: "
                    f"{cause.msg}")
    errno_msg = re.search(r"\[Errno \d+\] ([^\n]+)", str(e))
    if errno_msg and "config" in str(e).lower():
        return f"cannot load --config: {errno_msg.group(1)}"
    if "Path to config file is an empty string" in str(e):
        return "--config is empty; pass e.g. --config=configs/ddad.py:<dataset>"
    return None


def _unknown_override(e: BaseException, argv) -> Optional[str]:
    """The line for an override of a field the config does not have below an existing one
    (``--config.generator_terms.bogus=1``): ml_collections says only ``'bogus'``."""
    key = re.fullmatch(r"""["']*(\w+)["']*""", str(e.args[0]) if e.args else "")
    if not key or not (isinstance(e, KeyError) or isinstance(e.__context__, KeyError)):
        return None
    for arg in argv[1:]:
        field = re.match(r"--config\.([\w.]+)=", arg)
        if field and field.group(1).split(".")[-1] == key.group(1):
            name = field.group(1)
            if name.startswith("generator_terms."):
                from ddad_jax import objectives  # pylint: disable=import-outside-toplevel
                return (f"unknown config field '{name}': this config's generator_terms has no '{key.group(1)}' "
                        f"(generator terms: {', '.join(objectives.GENERATOR_TERMS)}; a term the config lacks is "
                        "added in a config file of your own, docs/extending.md)")
            return f"unknown config field '{name}'"
    return None


def _one_line(e: BaseException, argv=()) -> str:
    """A flag/config exception as one readable line (ml_collections nests its messages)."""
    problem = _config_file_problem(e) or _unknown_override(e, argv)
    if problem:
        return problem
    msg = re.sub(r"\s+", " ", str(e).replace("\\n", "\n"))
    scalar = re.search(r"Attribute <class '(\w+)'>\.\w+ does not exist.*lookup: ([\w.]+)", msg)
    if scalar:  # --config.generator_terms.bn.weight=2 where bn is a plain number
        parent = scalar.group(2).rsplit(".", 1)[0]
        return f"unknown config field '{scalar.group(2)}' ({parent} is a {scalar.group(1)}, not a group of fields)"
    typo = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', msg)
    if typo:
        return f"unknown config field '{typo.group(2)}' (did you mean '{typo.group(1)}'?)"
    if "Traceback" in msg:  # a config file's get_config() raised: keep its own message
        msg = re.split(r"\b\w+Error: ", msg)[-1]
    msg = msg.strip()
    if len(msg) > 1 and msg[0] == msg[-1] and msg[0] in "'\"":  # unwrap a wholly quoted message
        msg = msg[1:-1]
    return msg


def _parse_flags(argv):
    try:
        rest = FLAGS(argv)
        # A config file that could not be read is only reported when the config is first
        # used (see _config_file_problem): use it here, while errors are still flag errors.
        getattr(FLAGS.config, "kind", None)
        return rest
    except Exception as e:  # pylint: disable=broad-except
        _fail(_one_line(e, argv))


def _run(config, workdir):
    from ddad_jax import loop  # pylint: disable=import-outside-toplevel
    return loop.train_and_evaluate(config, workdir)


# OSErrors that say something about the machine, not the code: a full disk or quota, a
# read-only file system, missing permissions.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _fail(message: str) -> None:
    """Ends the process as every user-fixable failure does: one line on stderr, status 2."""
    print("error: " + " ".join(message.split()), file=sys.stderr, flush=True)
    sys.exit(2)


def run(dataset) -> None:
    """Entry point of ``experiments.<dataset>``; ``None``: ``experiments.custom``, whose dataset
    is the config's (the user's own, docs/data.md)."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.set_verbosity(logging.WARNING)  # orbax's per-save INFO lines drown the progress
        config, workdir = FLAGS.config, FLAGS.workdir
        try:
            if config is None:
                raise UserError("--config is required, e.g. --config=configs/ddad.py:" + (dataset or "NAME"))
            if not workdir:
                raise UserError("--workdir is required (checkpoints, metrics and samples go there)")
            if dataset is not None and config.dataset != dataset:
                raise UserError(f"this config is for '{config.dataset}', but this is "
                                f"experiments.{dataset}; pass --config=<file>.py:{dataset}"
                                + ("" if config.dataset in ("fashion_mnist", "cifar10", "cifar100", "caltech101")
                                   else " (your own datasets run with python -m experiments.custom)"))
            parallel.split_host_devices(config)
            parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
            _run(config, workdir)
        except UserError as e:  # raised anywhere under the run: one line, no traceback
            _fail(str(e))
        except OSError as e:
            if e.errno not in _ENVIRONMENT_ERRNOS:
                raise
            # the disk or the permissions of a path the run writes: fixable by the user
            _fail(f"{e.strerror}: {e.filename}" if e.filename else str(e))

    app.run(main, flags_parser=_parse_flags)
