"""Workdirs and teacher directories on Google Cloud Storage (``gs://``), against a local GCS
emulator (gcp-storage-emulator, in memory, with what ``tests/gcs_emulator.py`` adds): plain
files (TensorBoard's event files included) go through etils' epath and gcsfs, orbax's
checkpoints through tensorstore's own GCS driver -- both pointed at the emulator by their
documented environment variables. What a real bucket adds (credentials, latency, quotas) is
not tested."""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import chex
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from conftest import train_until_interrupted
from configs import ddad as ddad_config
from configs import teacher as teacher_config
from ddad_jax import export, loop, trainers, workdir as workdir_lib
from ddad_jax.errors import UserError

BUCKET = "ddad-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bucket():
    """``gs://ddad-test`` on a GCS emulator of this module's own; gcsfs and tensorstore sent
    there through their environment variables."""
    port = _free_port()
    emulator = os.path.join(os.path.dirname(__file__), "gcs_emulator.py")
    server = subprocess.Popen([sys.executable, emulator, "start", f"--port={port}", "--in-memory",
                               f"--default-bucket={BUCKET}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://localhost:{port}"
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL")}
    os.environ.update(STORAGE_EMULATOR_HOST=url, TENSORSTORE_GCS_HTTP_URL=url)
    logging.getLogger("gcsfs").setLevel(logging.ERROR)  # "no default credentials", once per call
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("localhost", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the GCS emulator did not start"
                time.sleep(0.2)
        yield f"gs://{BUCKET}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _records(workdir, key):
    text = epath.Path(os.path.join(workdir, "metrics.jsonl")).read_text()
    return [json.loads(line) for line in text.splitlines() if key in line]


def _final_checkpoint(workdir):
    directory = os.path.join(workdir, "checkpoints")
    step = max(int(p.name) for p in epath.Path(directory).iterdir() if p.name.isdigit())
    with ocp.StandardCheckpointer() as ckptr:
        return step, ckptr.restore(os.path.join(directory, str(step), "default"))


def test_workdir_helpers_name_buckets_as_they_are(bucket, tmp_path):
    assert workdir_lib.is_remote(f"{bucket}/run") and not workdir_lib.is_remote(str(tmp_path))
    assert workdir_lib.absolute(f"{bucket}/run") == f"{bucket}/run"  # not $PWD/gs:/...
    assert workdir_lib.absolute("run") == os.path.join(os.getcwd(), "run")
    target = f"{bucket}/helpers/log.txt"
    workdir_lib.path(f"{bucket}/helpers").mkdir(parents=True, exist_ok=True)
    workdir_lib.append_text(target, "a\n")
    workdir_lib.append_text(target, "b\n")  # no append on GCS: the object is rewritten whole
    workdir_lib.write_atomically(f"{bucket}/helpers/card.json", "{}\n")
    assert epath.Path(target).read_text() == "a\nb\n"
    assert epath.Path(f"{bucket}/helpers/card.json").read_text() == "{}\n"
    with pytest.raises(UserError, match=r"nosuchscheme:// paths need"):
        workdir_lib.path("nosuchscheme://b/run")


@pytest.mark.slow
def test_teacher_run_resume_and_export_on_a_bucket_equal_the_same_on_disk(bucket, tmp_path, fmnist_data_dir):
    # a teacher trained into the bucket: its export (orbax, then renames) and card land there
    teacher = teacher_config.get_config("fashion_mnist,smoke")
    teacher.data_dir, teacher.num_devices = fmnist_data_dir, 1
    teacher_dir = f"{bucket}/teacher"
    loop.train_and_evaluate(teacher, teacher_dir)
    assert epath.Path(teacher_dir, "teacher.json").exists() and epath.Path(teacher_dir, "teacher").is_dir()
    assert not epath.Path(teacher_dir, "teacher.new").exists()

    config = ddad_config.get_config("fashion_mnist,smoke")  # 2 epochs of 2 iterations, 1 fine-tuning epoch
    config.teacher_dir, config.data_dir, config.num_devices = teacher_dir, fmnist_data_dir, 1
    on_disk = str(tmp_path / "on_disk")
    straight = loop.train_and_evaluate(config, on_disk)
    assert straight["teacher_dir"] == teacher_dir

    # the same run in the bucket, killed inside fine-tuning (after the checkpoint of step 4), rerun
    workdir = f"{bucket}/runs/ddad"
    train_until_interrupted(trainers.build(config), workdir, at_step=5)
    assert _final_checkpoint(workdir)[0] == 4
    resumed = loop.train_and_evaluate(config, workdir)
    (step_a, state_a), (step_b, state_b) = _final_checkpoint(on_disk), _final_checkpoint(workdir)
    assert step_a == step_b == 6
    chex.assert_trees_all_equal(state_a, state_b)
    assert resumed["student_acc"] == straight["student_acc"]
    assert [r["step"] for r in _records(workdir, "student/loss")] == [1, 2, 3, 4, 5, 6]  # none twice
    assert json.loads(epath.Path(workdir, "summary.json").read_text())["student_acc"] == straight["student_acc"]
    names = {p.name for p in epath.Path(workdir).iterdir()}
    assert {"run.json", "metrics.jsonl", "summary.json", "student.json", "student", "checkpoints", "samples",
            "tb"} <= names, names
    assert sorted(p.name for p in epath.Path(workdir, "samples").iterdir()) == sorted(os.listdir(f"{on_disk}/samples"))
    assert epath.Path(workdir, "samples", "epoch_0003.png").read_bytes() == open(f"{on_disk}/samples/epoch_0003.png",
                                                                                  "rb").read()
    assert any(p.name.startswith("events.out.tfevents") for p in epath.Path(workdir, "tb").iterdir())

    # the workdir guard reads run.json from the bucket: another run there is refused
    other = ddad_config.get_config("fashion_mnist,smoke")
    other.teacher_dir, other.data_dir, other.num_devices, other.seed = teacher_dir, fmnist_data_dir, 1, 1
    with pytest.raises(UserError, match="holds a run with seed=0, not 1"):
        loop.train_and_evaluate(other, workdir)

    # the export reads the run from the bucket and writes a local directory; never into the bucket
    out = str(tmp_path / "export")
    export.export_student(workdir, out)
    exported = json.load(open(os.path.join(out, "student.json")))
    assert exported["run_dir"] == workdir
    with ocp.StandardCheckpointer() as ckptr:
        student = ckptr.restore(os.path.join(out, "student"))
    np.testing.assert_array_equal(
        np.asarray(student["params"]["Dense_0"]["kernel"]),
        np.asarray(state_b["student"]["params"]["Dense_0"]["kernel"]))
    with pytest.raises(UserError, match="written to a local directory"):
        export.export_student(workdir, f"{bucket}/export")
