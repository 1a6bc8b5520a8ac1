import gzip
import io
import json
import os
import time

import chex
import numpy as np
import pytest

from ddad_jax import data, reporting
from ddad_jax.data.fashion_mnist import read_idx


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = b"\x00\x00\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path = str(tmp_path / "x-idx3-ubyte.gz")
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())
    np.testing.assert_array_equal(read_idx(path), arr)
    bad = str(tmp_path / "bad")
    open(bad, "wb").write(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)


def test_epoch_batches_deterministic_and_disjoint():
    a = list(data.epoch_batches(10, 3, seed=0, epoch=1))
    b = list(data.epoch_batches(10, 3, seed=0, epoch=1))
    c = list(data.epoch_batches(10, 3, seed=0, epoch=2))
    assert len(a) == 3 and all(len(x) == 3 for x in a)
    chex.assert_trees_all_equal(a, b)
    assert any((x != y).any() for x, y in zip(a, c))
    assert len(np.unique(np.concatenate(a))) == 9


def test_normalize_pads_and_standardises():
    spec = data.get_spec("fashion_mnist")
    x = np.full((2, 28, 28, 1), 255, np.uint8)
    y = data.normalize(x, spec)
    chex.assert_shape(y, (2, 32, 32, 1))
    chex.assert_trees_all_close(y[0, 0, 0, 0], (0.0 - spec.mean[0]) / spec.std[0])  # padding
    chex.assert_trees_all_close(y[0, 5, 5, 0], (1.0 - spec.mean[0]) / spec.std[0])
    chex.assert_trees_all_close(data.denormalize(y, spec)[0, 5, 5, 0], 1.0, atol=1e-6)


def test_real_fashion_mnist_shards_partition_the_split(fmnist_data_dir):
    spec = data.get_spec("fashion_mnist")
    x, y = data.load_split(spec, "test", fmnist_data_dir)
    assert x.shape == (10_000, 28, 28, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)  # Fashion-MNIST's balanced test split
    shards = [data.load_split(spec, "test", fmnist_data_dir, shard_index=i, shard_count=3) for i in range(3)]
    np.testing.assert_array_equal(np.concatenate([s[1] for s in shards]), y)


def test_reporter_progress_jsonl_and_resume_truncation(tmp_path):
    out = io.StringIO()
    r = reporting.Reporter(str(tmp_path), total_steps=10, stream=out)
    for step in (2, 4, 6):
        r.write(step, {"loss": step * 1.0})
        r.progress(step, {"loss": step * 1.0})
    r.close()
    assert "step 6/10 | loss 6 |" in out.getvalue() and "steps/s | ETA" in out.getvalue()
    r = reporting.Reporter(str(tmp_path), total_steps=10, start_step=4, stream=out)  # resumed at 4
    r.close()
    steps = [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")]
    assert steps == [2, 4]


@pytest.mark.parametrize("torn", ['{"step": 8, "lo', '{"step": 8, "loss": 8.0}', "\x00\x00\x00"])
def test_reporter_resume_drops_a_torn_last_line_and_keeps_the_rest(tmp_path, capsys, torn):
    # A kill can cut the last append short (or leave it without its newline). Before the fix,
    # resuming raised a JSONDecodeError (or appended onto the torn line).
    r = reporting.Reporter(str(tmp_path), total_steps=10, stream=io.StringIO())
    for step in (2, 4, 6):
        r.write(step, {"loss": step * 1.0})
    r.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(torn)
    r = reporting.Reporter(str(tmp_path), total_steps=10, start_step=8, stream=io.StringIO())
    r.write(9, {"loss": 9.0})
    r.close()
    records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    valid_torn = torn.endswith("}")  # complete but for its newline: a record like any other
    assert [x["step"] for x in records] == [2, 4, 6] + [8] * valid_torn + [9]
    warning = capsys.readouterr().err
    assert ("warning: dropped the torn last line" in warning) != valid_torn and warning.count("\n") <= 1


def test_reporter_keeps_an_unparsable_line_that_is_not_the_last(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\nnot json \xff\n{"step": 2}\n{"step": 3}\n')
    reporting.Reporter(str(tmp_path), total_steps=10, start_step=2, stream=io.StringIO()).close()
    assert path.read_bytes() == b'{"step": 1}\nnot json \xff\n{"step": 2}\n'


def _tb_events(tb_dir):
    """Every event of every TensorBoard file in ``tb_dir`` (TFRecord framing, no TensorFlow)."""
    import glob
    import struct
    from tensorboardX.proto import event_pb2
    events = []
    for path in sorted(glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            raw = f.read()
        i, file_events = 0, []
        while i < len(raw):
            (n,) = struct.unpack("<Q", raw[i:i + 8])
            file_events.append(event_pb2.Event.FromString(raw[i + 12:i + 12 + n]))
            i += 12 + n + 4
        events.append(file_events)
    return events


def test_reporter_resume_purges_later_tensorboard_scalars_and_gives_history(tmp_path):
    # Without purge_step, TensorBoard kept both the interrupted run's scalars after the
    # checkpoint and the resumed run's for the same steps (a zig-zag in every curve).
    r = reporting.Reporter(str(tmp_path), total_steps=10, stream=io.StringIO())
    for step in range(1, 7):
        r.write(step, {"loss": float(step)})
    r.close()
    time.sleep(1.1)  # tensorboardX names event files by the second
    r = reporting.Reporter(str(tmp_path), total_steps=10, start_step=4, stream=io.StringIO())
    assert r.history("loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)] and r.history("nothing") == []
    r.write(5, {"loss": 50.0})
    r.close()
    first, resumed = _tb_events(str(tmp_path / "tb"))
    assert [e.step for e in first if e.summary.value] == [1, 2, 3, 4, 5, 6]
    start = [e for e in resumed if e.HasField("session_log")]
    assert len(start) == 1 and start[0].session_log.status == start[0].session_log.START and start[0].step == 5
    assert [(e.step, e.summary.value[0].simple_value) for e in resumed if e.summary.value] == [(5, 50.0)]


def test_image_grid(tmp_path):
    from PIL import Image
    path = str(tmp_path / "g" / "grid.png")
    reporting.save_image_grid(path, np.random.default_rng(0).random((10, 8, 8, 1)), scale=1)
    img = Image.open(path)
    assert img.size == (4 * 10 + 2, 3 * 10 + 2)


def test_image_grid_with_labels_writes_them_in_each_tile(tmp_path):
    from PIL import Image
    images = np.zeros((4, 16, 16, 1))  # black tiles: any bright pixel inside a tile is label text
    reporting.save_image_grid(str(tmp_path / "plain.png"), images, scale=2)
    reporting.save_image_grid(str(tmp_path / "labelled.png"), images, scale=2, labels=np.array([3, 1, 4, 1]))
    plain, labelled = (np.asarray(Image.open(str(tmp_path / f)).convert("RGB")) for f in ("plain.png", "labelled.png"))
    assert plain.shape == labelled.shape
    tile = lambda a, r, c: a[(2 + r * 18) * 2:(2 + r * 18 + 16) * 2, (2 + c * 18) * 2:(2 + c * 18 + 16) * 2]
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):
        assert tile(plain, r, c).max() == 0 and tile(labelled, r, c)[..., 0].max() > 200  # yellow text


def test_image_grid_labels_are_class_names_where_known(tmp_path):
    from PIL import Image
    from ddad_jax.data import classes
    images, labels = np.zeros((2, 32, 32, 1)), np.array([8, 0])
    for name, names in (("numbers", ()), ("names", classes.FASHION_MNIST)):
        reporting.save_image_grid(str(tmp_path / f"{name}.png"), images, labels=labels, class_names=names)
    numbers, names = (np.asarray(Image.open(str(tmp_path / f"{n}.png")).convert("RGB"))[..., 0] > 200
                      for n in ("numbers", "names"))
    width = lambda text, col: np.flatnonzero(text[4:26, (2 + col * 34) * 2:(2 + col * 34 + 32) * 2].any(0)).max()
    assert width(names, 0) > 2 * width(numbers, 0)  # "bag" is wider than "8"
    # a name longer than the 64-pixel tile is cut to fit; an unknown label stays a number
    assert reporting._label_text(0, classes.FASHION_MNIST, 10) == "t-shirt/t."  # pylint: disable=protected-access
    assert reporting._label_text(8, classes.FASHION_MNIST, 10) == "bag"  # pylint: disable=protected-access
    assert reporting._label_text(12, classes.FASHION_MNIST, 10) == "12"  # pylint: disable=protected-access
    assert data.get_spec("fashion_mnist").class_names == classes.FASHION_MNIST
    assert len(data.get_spec("cifar100").class_names) == 100 and data.get_spec("cifar10").class_names[3] == "cat"


def test_tensorboard_writer_is_imported_without_torch(tmp_path):
    """tensorboardX imports torch when it is installed (2.3 s of every launch); the reporter
    imports it with torch hidden, and torch stays importable afterwards."""
    import subprocess
    import sys
    pytest.importorskip("torch")
    code = ("import sys; from ddad_jax import reporting; r = reporting.Reporter(sys.argv[1], 2); "
            "r.write(1, {'a': 1.0}); r.close(); assert r._tb is not None; "
            "assert 'torch' not in sys.modules, 'tensorboardX imported torch'; "
            "import torch; assert torch.zeros(1).shape == (1,)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "w")], check=True, cwd=repo,
                   env={**os.environ, "PYTHONPATH": repo})
    assert os.listdir(tmp_path / "w" / "tb")


def test_cifar_standin_is_read_as_the_stock_dataset(tmp_path):
    """The CIFAR stand-in (random images, labels cycling through the classes) in tfds's stock
    format reads back through the same path as real CIFAR would."""
    from ddad_jax.data.standin import write_cifar_standin  # pylint: disable=import-outside-toplevel
    write_cifar_standin("cifar100", str(tmp_path), train_size=6, test_size=4)
    spec = data.get_spec("cifar100")
    images, labels = data.load_split(spec, "test", str(tmp_path))
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert sorted(labels.tolist()) == [0, 1, 2, 3]
    assert data.prepared_splits(spec, str(tmp_path)) == {"train": 6, "test": 4}
