"""The shared absl entry: parse ``--config`` and ``--workdir``, dispatch on ``config.kind``.

Every failure a user can fix (bad config, missing data or teacher, non-finite loss...)
ends as one ``error: ...`` line on stderr and exit status 2; nothing on disk is touched.
"""

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ddad_jax.backends import cpu as cpu_backend
from ddad_jax.errors import UserError

config_flags.DEFINE_config_file("config", None, "a configs/*.py file, e.g. configs/ddad.py:fashion_mnist",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and samples go (resumes if present)")
FLAGS = flags.FLAGS


def _one_line(e: BaseException) -> str:
    """A flag/config exception as one readable line (ml_collections nests its messages)."""
    msg = re.sub(r"\s+", " ", str(e).replace("\\n", "\n"))
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
        return FLAGS(argv)
    except Exception as e:  # pylint: disable=broad-except
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)


def _run(config, workdir):
    from ddad_jax import loop  # pylint: disable=import-outside-toplevel  (JAX starts after split_cpu)
    return loop.train_and_evaluate(config, workdir)


def run(dataset: str) -> None:
    """Entry point of ``experiments.<dataset>``."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.set_verbosity(logging.WARNING)  # orbax's per-save INFO lines drown the progress
        config, workdir = FLAGS.config, FLAGS.workdir
        try:
            if config is None:
                raise UserError("--config is required, e.g. --config=configs/ddad.py:" + dataset)
            if not workdir:
                raise UserError("--workdir is required (checkpoints, metrics and samples go there)")
            if config.dataset != dataset:
                raise UserError(f"this config is for '{config.dataset}', but this is "
                                f"experiments.{dataset}; pass --config=<file>.py:{dataset}")
            cpu_backend.split_host_devices(config)
            _run(config, workdir)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(main, flags_parser=_parse_flags)
