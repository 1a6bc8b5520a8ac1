"""python -m experiments.custom --config=configs/<method>.py:NAME --workdir=<dir>

Any dataset, your own included: NAME is the one you prepared with
``python -m ddad_jax.data.prepare NAME --from_folder=DIR`` (or ``--from_arrays=FILE.npz``);
see docs/data.md. The run takes its dataset from the config, so there is no dataset check.
"""

from experiments import launch

if __name__ == "__main__":
    launch.run(None)
