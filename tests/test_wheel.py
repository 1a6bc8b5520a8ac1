"""The package as a user installs it: the wheel, in a fresh virtual environment, runs the
README's Python example from outside the checkout (configs ship with it)."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def readme_python_example() -> str:
    text = open(os.path.join(REPO, "README.md")).read()
    block = re.search(r"<!-- python_example:begin -->\s*```python\n(.*?)```\s*<!-- python_example:end -->", text, re.S)
    assert block, "README.md has no python_example block"
    return block.group(1)


@pytest.mark.slow
def test_the_wheel_runs_the_readme_example_outside_the_checkout(tmp_path):
    wheels, venv, outside = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    outside.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    REPO], check=True, capture_output=True)
    wheel = next(wheels.glob("ddad_jax-*.whl"))
    # the venv sees the installed dependencies (jax, flax, ...; no network here), not the checkout
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    script = outside / "example.py"
    script.write_text("import configs, ddad_jax\nprint('FROM', ddad_jax.__file__, configs.__file__)\n"
                      + readme_python_example())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    result = subprocess.run([python, str(script)], cwd=outside, env={**env, "JAX_PLATFORMS": "cpu"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    where = next(line for line in result.stdout.splitlines() if line.startswith("FROM"))
    assert REPO not in where and str(venv) in where, where  # the wheel's code, not the checkout's
    summary = json.load(open(outside / "runs" / "my_student" / "summary.json"))
    printed = float(result.stdout.strip().splitlines()[-1])
    assert summary["student_agreement"] == pytest.approx(printed) and summary["student"] == "lenet5_half"
