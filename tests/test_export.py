"""The distilled student out: a real (smoke) DDAD run leaves ``student/`` + ``student.json``;
``ddad_jax.export`` turns it into ONNX fp32 (equal to JAX) and int8 (calibrated on the run's
generator only), refuses to overwrite, and the export benchmark writes every figure."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, one_line_error, xla_flags
from ddad_jax import backends, data, export, models
from ddad_jax.export import card as card_lib, onnx as export_onnx, run as export_run
from ddad_jax.errors import UserError

CALIBRATION = 32


@pytest.fixture(scope="module")
def ddad_run(tmp_path_factory, fmnist_smoke_teacher, fmnist_data_dir):
    """A finished smoke DDAD run (configs/fmnist_lenet5.py:smoke, 6 iterations)."""
    from configs import fmnist_lenet5
    from ddad_jax import loop
    workdir = str(tmp_path_factory.mktemp("export") / "ddad")
    config = fmnist_lenet5.get_config("smoke")
    config.teacher_dir, config.data_dir, config.num_devices, config.sample_grid = \
        fmnist_smoke_teacher, fmnist_data_dir, 1, 0
    loop.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def exported(ddad_run, tmp_path_factory):
    """``export_student(onnx, int8)`` with no dataset reachable: the data dir points nowhere and
    reading any split fails; the images handed to the calibration reader are recorded."""
    out = str(tmp_path_factory.mktemp("out") / "student_export")
    seen = []
    make_reader = export_onnx.calibration_reader

    def no_data(*args, **kwargs):
        raise AssertionError("the export read a dataset")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFDS_DATA_DIR", str(tmp_path_factory.mktemp("no_data")))
        mp.setattr(data, "load_split", no_data)
        mp.setattr(export_onnx, "calibration_reader", lambda images, batch=32: seen.append(images) or make_reader(images, batch))
        result = export.export_student(ddad_run, out, onnx=True, int8=True, calibration_images=CALIBRATION)
    return out, result, seen


@pytest.mark.slow
def test_a_finished_ddad_run_leaves_its_final_student_and_card(ddad_run):
    card = json.load(open(os.path.join(ddad_run, card_lib.STUDENT_CARD)))
    summary = json.load(open(os.path.join(ddad_run, "summary.json")))
    assert card["architecture"] == "lenet5_half" and card["method"] == "ddad"
    assert card["input"]["shape_hwc"] == [32, 32, 1] and card["num_classes"] == 10
    assert card["class_names"][0] == "t-shirt/top" and len(card["class_names"]) == 10
    assert card["preprocessing"]["pad"] == 2 and card["preprocessing"]["mean"] == [0.2190]
    assert card["student_acc"] == summary["student_acc"]
    assert card["teacher"]["model"] == "lenet5_bn" and card["teacher"]["test_acc"] == summary["teacher_acc"]
    assert card["ddad_jax"]["version"]
    # the exported variables are the final checkpoint's student
    model, variables, _ = export.load_student(ddad_run)
    step, state = export_run.final_state(ddad_run)
    assert step == 6
    same = jax.tree.map(np.array_equal, variables, export_run.variables_of(state["student"]))
    assert all(jax.tree.leaves(same))
    # the card's preprocessing is the one the run used
    pixels = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    pre = card["preprocessing"]
    x = np.pad(pixels * pre["scale"], ((0, 0), (pre["pad"],) * 2, (pre["pad"],) * 2, (0, 0)))
    np.testing.assert_allclose((x - pre["mean"]) / pre["std"], data.normalize(pixels, data.get_spec("fashion_mnist")),
                               atol=1e-5)
    assert card_lib.card_spec(card) == data.get_spec("fashion_mnist")


def test_a_teachers_own_preprocessing_goes_into_the_student_card_and_its_evaluation(fmnist_data_dir):
    """A student distilled from a teacher that saw Fashion-MNIST resized to 32 with MNIST's
    statistics: its card says so, and ``--evaluate`` feeds the test split that way."""
    from ddad_jax.export import evaluate as export_evaluate
    spec = data.with_preprocessing(data.get_spec("fashion_mnist"), 32, True, (0.1307,), (0.3081,))
    card = card_lib.student_card({"dataset": "fashion_mnist", "student": "lenet5_half"}, spec)
    assert card_lib.card_spec(card) == spec
    assert card["preprocessing"]["resize"] == 32 and card["preprocessing"]["pad"] == 0
    x, labels, _ = export_evaluate.load_test_split("fashion_mnist", fmnist_data_dir, card_lib.card_spec(card))
    images, _ = data.load_split(spec, "test", fmnist_data_dir, num_examples=8)
    assert x.shape == (10000, 32, 32, 1) and len(labels) == 10000
    np.testing.assert_allclose(x[:8], data.normalize(images, spec), atol=1e-6)
    assert not np.allclose(x[:8], data.normalize(images, data.get_spec("fashion_mnist")))


@pytest.mark.slow
def test_onnx_fp32_equals_jax_and_int8_mostly_agrees_on_generator_images(ddad_run, exported):
    import onnx
    out, result, _ = exported
    assert sorted(os.listdir(out)) == ["student", "student.json", "student_fp32.onnx", "student_int8.onnx"]
    onnx.checker.check_model(os.path.join(out, export_onnx.FP32_ONNX))
    model, variables, card = export.load_student(out)
    assert result["max_abs_logit_diff_fp32"] < 1e-4
    assert card["exports"]["onnx_fp32"]["max_abs_logit_diff_vs_jax"] == result["max_abs_logit_diff_fp32"]
    # generator images the calibration did not see, at a batch size the export did not use (dynamic batch)
    images, _ = export_run.generator_images(ddad_run, 48, seed=7)
    want = np.asarray(model.apply(variables, images))
    fp32 = export_onnx.onnx_logits(export_onnx.session(os.path.join(out, export_onnx.FP32_ONNX)), images, batch=48)
    np.testing.assert_allclose(fp32, want, atol=1e-4, rtol=0)
    int8 = export_onnx.onnx_logits(export_onnx.session(os.path.join(out, export_onnx.INT8_ONNX)), images, batch=48)
    assert int8.shape == (48, 10) and np.all(np.isfinite(int8))
    assert np.mean(int8.argmax(-1) == fp32.argmax(-1)) >= 0.8
    assert 0.8 <= result["int8_top1_agreement_with_fp32"] <= 1.0
    quantized = {n.op_type for n in onnx.load(os.path.join(out, export_onnx.INT8_ONNX)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= quantized
    assert card["exports"]["onnx_int8"]["calibration"]["images"] == CALIBRATION
    by_calibration = card["exports"]["onnx_int8"]["top1_agreement_with_fp32_by_calibration"]
    assert list(by_calibration) == list(export_onnx.CALIBRATIONS)  # "auto" by default: each tried
    assert result["int8_top1_agreement_with_fp32"] == max(by_calibration.values())
    assert by_calibration[result["calibration_method"]] == max(by_calibration.values())
    # the plain and the CPU-backend networks give the same logits (the export uses the plain one)
    plain = models.get_classifier("lenet5_half", 10, ops=backends.PLAIN)
    np.testing.assert_allclose(plain.apply(variables, images), want, atol=1e-5)


def test_int8_is_calibrated_on_the_generator_images_only(ddad_run, exported):
    _, _, seen = exported
    # one reader per calibration "auto" tries, each over the same generator images
    assert len(seen) == len(export_onnx.CALIBRATIONS) and seen[0].shape == (CALIBRATION, 32, 32, 1)
    assert all(np.array_equal(images, seen[0]) for images in seen)
    drawn, source = export_run.generator_images(ddad_run, 2 * CALIBRATION, seed=0)
    np.testing.assert_allclose(seen[0], drawn[:CALIBRATION], atol=1e-5)
    assert source["source"] == "generator" and source["checkpoint_step"] == 6
    # the generator's images are normalised like real ones (its last BatchNorm), not pixels
    assert abs(float(np.mean(drawn))) < 0.5 and 0.5 < float(np.std(drawn)) < 2.0
    reader = export_onnx.calibration_reader(drawn[:5], batch=2)
    batches = []
    while (batch := reader.get_next()) is not None:
        batches.append(batch[export_onnx.INPUT_NAME])
    assert [len(b) for b in batches] == [2, 2, 1]



def test_auto_calibration_keeps_the_first_of_the_best_agreeing_and_a_named_one_is_used_alone(exported, tmp_path,
                                                                                              monkeypatch):
    """``write_int8(method="auto")`` quantizes with each calibration and keeps the one with the
    highest top-1 agreement with fp32 on the held-out images, the first of equals (agreements
    set by hand here: minmax 0.90, percentile 0.95, entropy 0.95 -> percentile); a named one is
    the only one tried; an unknown one is an error naming those that exist."""
    out, _, seen = exported
    shutil.copy(os.path.join(out, export_onnx.FP32_ONNX), tmp_path / export_onnx.FP32_ONNX)
    images = seen[0]
    tried, agreement = [], {"minmax": 0.90, "percentile": 0.95, "entropy": 0.95}
    quantize = export_onnx.quantize_int8

    def recording(fp32_path, int8_path, calibration, method="minmax"):
        tried.append(method)
        quantize(fp32_path, int8_path, calibration, method)
        with open(tmp_path / f"{method}.onnx", "wb") as f:
            f.write(open(int8_path, "rb").read())

    monkeypatch.setattr(export_onnx, "quantize_int8", recording)
    monkeypatch.setattr(export_onnx, "top1_agreement", lambda a, b, x: agreement[tried[-1]])
    entry = export_onnx.write_int8(str(tmp_path), images, images, {"source": "generator"})
    assert tried == ["minmax", "percentile", "entropy"]
    assert entry["calibration"]["method"] == "percentile" and entry["top1_agreement_with_fp32"] == 0.95
    assert entry["top1_agreement_with_fp32_by_calibration"] == agreement
    assert open(tmp_path / export_onnx.INT8_ONNX, "rb").read() == open(tmp_path / "percentile.onnx", "rb").read()
    assert sorted(os.listdir(tmp_path)) == sorted([export_onnx.FP32_ONNX, export_onnx.INT8_ONNX, "minmax.onnx",
                                                   "percentile.onnx", "entropy.onnx"])  # no candidate left over
    tried.clear()
    entry = export_onnx.write_int8(str(tmp_path), images, images, {"source": "generator"}, method="entropy")
    assert tried == ["entropy"] and entry["calibration"]["method"] == "entropy"
    with pytest.raises(UserError, match="unknown int8 calibration 'kl'; known: auto, minmax, percentile, entropy"):
        export_onnx.write_int8(str(tmp_path), images, images, {}, method="kl")


def test_the_card_records_the_generator_as_the_run_built_it(ddad_run):
    """The card's ``generator`` is what the run trained (its config through ``trainers.hyper``),
    and the export's images from it are, number for number, those the run's config gives --
    what the export drew when it still rebuilt the generator from ``trainers``."""
    import ml_collections
    from ddad_jax import synthesis, trainers
    card = json.load(open(os.path.join(ddad_run, card_lib.STUDENT_CARD)))
    config = ml_collections.ConfigDict(json.load(open(os.path.join(ddad_run, "run.json"))))
    spec = data.get_spec(config.dataset)
    hp = trainers.hyper(config, spec)
    assert card["format"] == card_lib.CARD_FORMAT == "ddad_jax student card v2"
    g = card["generator"]
    assert g == card_lib.generator_entry(config.generator_channels, "dafl", (32, 32, 1), hp.latent_dim, hp.num_classes,
                                         hp.balanced_targets, config.batch_size)
    assert (g["base_channels"], g["latent_dim"], g["batch_size"]) == (8, 16, 16)  # the smoke settings
    assert g["num_classes"] == 0 and not g["class_conditional"] and g["targets"] is None  # no `ce` term
    step, state = export_run.final_state(ddad_run)
    generator = models.get_generator(config.generator_channels, spec.image_size, spec.channels)
    draw = jax.jit(lambda v, z: generator.apply(v, z, train=True, mutable=["batch_stats"])[0])
    want = []
    for i in range(3):
        z, _ = synthesis.draw_latents(jax.random.fold_in(jax.random.key(5), i), hp.latent_dim, hp.num_classes,
                                      (config.batch_size,), balanced=hp.balanced_targets)
        want.append(np.asarray(draw(export_run.variables_of(state["generator"]), z)))
    got, source = export_run.generator_images(ddad_run, 40, seed=5)
    np.testing.assert_array_equal(got, np.concatenate(want)[:40])
    assert source == {"source": "generator", "checkpoint_step": step, "seed": 5, "batch_size": 16}


@pytest.mark.slow
def test_int8_export_needs_no_trainers(ddad_run, tmp_path):
    """``python -m ddad_jax.export --int8`` builds the generator from the card and ``models``:
    with ``ddad_jax.trainers`` made unimportable it still exports, and never imports it."""
    out = tmp_path / "out"
    code = ("import sys\n"
            "sys.modules['ddad_jax.trainers'] = None  # any import of it fails\n"
            "from ddad_jax.export import cli\n"
            f"assert cli.main(['--run={ddad_run}', '--out={out}', '--int8', '--calibration_images=8']) == 0\n"
            "assert not [m for m, v in sys.modules.items() if m.startswith('ddad_jax.trainers') and v is not None]\n")
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags()}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"ONNX int8: (minmax|percentile|entropy) calibration on 8 generator images", result.stdout)
    assert sorted(os.listdir(out)) == ["student", "student.json", "student_fp32.onnx", "student_int8.onnx"]


def test_a_card_of_an_older_ddad_jax_exports_and_int8_names_what_is_missing(ddad_run, tmp_path):
    old = tmp_path / "v1_run"  # a card written before the generator was recorded
    shutil.copytree(ddad_run, old)
    card = json.load(open(old / "student.json"))
    del card["generator"]
    card["format"] = "ddad_jax student card v1"
    (old / "student.json").write_text(json.dumps(card))
    result = export.export_student(str(old), str(tmp_path / "plain"))  # the student and its card: as before
    assert sorted(os.listdir(tmp_path / "plain")) == ["student", "student.json"]
    assert "generator" not in result["card"] and result["card"]["architecture"] == "lenet5_half"
    failed = run_entry_export(f"--run={old}", f"--out={tmp_path / 'int8'}", "--int8")
    one_line_error(failed, "missing generator.base_channels, generator.image_shape_hwc, generator.latent_dim")
    assert "older ddad_jax" in failed.stderr and "export without --int8" in failed.stderr
    older = tmp_path / "no_card"  # a run made before students were exported: no card at all
    shutil.copytree(ddad_run, older, ignore=shutil.ignore_patterns("student", "student.json"))
    with pytest.raises(UserError, match="has no student.json recording its generator"):
        export.export_student(str(older), str(tmp_path / "x"), int8=True)
    del card["architecture"]  # what loading the student needs
    (old / "student.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match=r"not a complete student card \(missing architecture\)"):
        export.export_student(str(old), str(tmp_path / "y"))
    assert not any(os.path.exists(tmp_path / d) for d in ("int8", "x", "y"))


def test_generator_entry_of_a_conditional_generator_feeds_one_hot_classes():
    entry = card_lib.generator_entry(8, "dafl", (8, 8, 3), 5, 4, True, 6)
    assert json.loads(json.dumps(entry)) == entry  # stored as it is
    assert entry["class_conditional"] and entry["targets"] and entry["image_shape_hwc"] == [8, 8, 3]
    assert export_run.check_generator(entry, "card") is entry
    generator = models.get_generator(8, 8, 3)
    variables = jax.jit(generator.init)(jax.random.key(0), np.zeros((2, 5 + 4), np.float32))  # noise + one-hot classes
    images = export_run.draw_images(entry, variables, 10, seed=1)
    assert images.shape == (10, 8, 8, 3) and images.dtype == np.float32
    from ddad_jax import synthesis
    z, targets = synthesis.draw_latents(jax.random.fold_in(jax.random.key(1), 0), 5, 4, (6,), balanced=True)
    assert sorted(np.bincount(np.asarray(targets), minlength=4)) == [1, 1, 2, 2]  # balanced: each class in turn
    first = jax.jit(lambda v, z: generator.apply(v, z, train=True, mutable=["batch_stats"])[0])(variables, z)
    np.testing.assert_allclose(images[:6], first, atol=1e-6)


def test_missing_card_keys_and_bad_generator_values_are_named():
    card = {"architecture": "lenet5_half", "input": {"shape_hwc": [32, 32, 1]}, "generator": None}
    assert card_lib.missing_keys(card, card_lib.STUDENT_KEYS) == ["num_classes"]
    assert card_lib.missing_keys(card, card_lib.GENERATOR_KEYS) == list(card_lib.GENERATOR_KEYS)
    assert card_lib.missing_keys({"input": [1]}, ["input.shape_hwc"]) == ["input.shape_hwc"]
    bad = {**card_lib.generator_entry(8, "dafl", (8, 8, 3), 5, 0, False, 6), "latent_dim": 0, "balanced_targets": "yes",
           "image_shape_hwc": [6, 6, 1]}
    with pytest.raises(UserError, match=r"latent_dim=0, balanced_targets='yes', image_shape_hwc=\[6, 6, 1\]"):
        export_run.check_generator(bad, "student.json")

def test_an_existing_out_dir_is_never_replaced_without_force(ddad_run, exported, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    one_line_error(run_entry_export(f"--run={ddad_run}", f"--out={out}", "--onnx"), "--out")
    assert os.listdir(out) == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="is not a student export"):  # --force replaces an export, nothing else
        export.export_student(ddad_run, str(out), force=True)
    assert os.listdir(out) == ["mine.txt"]
    previous, _, _ = exported
    copy = tmp_path / "copy"  # an earlier export, with its ONNX files
    shutil.copytree(previous, copy)
    result = export.export_student(ddad_run, str(copy), force=True)  # no ONNX: only the student and its card
    assert sorted(os.listdir(copy)) == ["student", "student.json"] and result["files"]["student"] == str(copy / "student")
    assert result["card"]["exports"] == {}
    with pytest.raises(UserError, match="holds the run itself"):
        export.export_student(ddad_run, os.path.dirname(ddad_run), force=True)


def test_what_is_not_a_finished_distillation_run_is_a_clear_error(ddad_run, fmnist_smoke_teacher, tmp_path):
    with pytest.raises(UserError, match="is a teacher run, not a distillation run"):
        export.export_student(fmnist_smoke_teacher, str(tmp_path / "a"))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(ddad_run, unfinished)
    os.remove(unfinished / "summary.json")
    with pytest.raises(UserError, match="is not finished"):
        export.export_student(str(unfinished), str(tmp_path / "b"))
    with pytest.raises(UserError, match="no run record"):
        export.export_student(str(tmp_path), str(tmp_path / "c"))
    kd_like = tmp_path / "kd_like"  # a run without a generator: no images to calibrate int8 on
    shutil.copytree(ddad_run, kd_like)
    (kd_like / "run.json").write_text(json.dumps({**json.load(open(kd_like / "run.json")), "kind": "kd"}))
    with pytest.raises(UserError, match="run of kind 'kd' has no generator"):
        export.export_student(str(kd_like), str(tmp_path / "d"), int8=True)
    assert not any(os.path.exists(tmp_path / d) for d in "abcd")


def test_a_run_made_before_students_were_exported_is_exported_from_its_last_checkpoint(ddad_run, tmp_path):
    old = tmp_path / "old_run"
    shutil.copytree(ddad_run, old, ignore=shutil.ignore_patterns("student", "student.json"))
    export.export_student(str(old), str(tmp_path / "out"))
    _, variables, card = export.load_student(str(tmp_path / "out"))
    _, want, _ = export.load_student(ddad_run)
    assert card["from_checkpoint_step"] == 6 and card["architecture"] == "lenet5_half"
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, variables, want)))


def test_export_benchmark_writes_every_figure(ddad_run, exported, fmnist_data_dir, tmp_path):
    from benchmarks import common, fmnist_export
    readme = open(os.path.join(common.REPO, "README.md")).read()
    fmnist_export.main([f"--runs={ddad_run}", f"--out={tmp_path / 'bench'}", "--calibration_images=16",
                        "--repeats=5", f"--data_dir={fmnist_data_dir}", "--eval_examples=200",
                        f"--results={tmp_path / 'results'}"])
    result = json.load(open(tmp_path / "results" / "fmnist_export.json"))
    [row] = result["rows"]
    for key in fmnist_export.KEYS:
        assert isinstance(row[key], (int, float)), key
    assert row["seed"] == 0 and row["acc_jax"] == row["acc_onnx_fp32"] and row["max_abs_logit_diff_fp32"] < 1e-4
    change = 100 * (row["acc_onnx_int8"] - row["acc_onnx_fp32"])
    assert result["int8_change_points"] == [row["int8_change_points"]] and abs(row["int8_change_points"] - change) < 1e-9
    assert result["int8_change_mean"] == row["int8_change_points"] and result["int8_change_std"] is None
    assert row["bytes_int8"] < row["bytes_fp32"] and result["calibration_images"] == 16
    assert row["calibration_method"] in export_onnx.CALIBRATIONS
    assert row["test_examples"] == 200 and "1 intra-op thread" in result["latency_method"]
    markdown = (tmp_path / "results" / "fmnist_export.md").read_text()
    assert "| 0 | " in markdown and f"{change:+.2f} (1 seed)" in markdown and "ONNX int8" in markdown
    assert open(os.path.join(common.REPO, "README.md")).read() == readme  # only benchmarks/results fills the README


def run_entry_export(*args):
    """``python -m ddad_jax.export ARGS`` as a user runs it (``run_entry``'s environment)."""
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags()}
    return subprocess.run([sys.executable, "-m", "ddad_jax.export", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)



@pytest.mark.slow
def test_evaluate_scores_every_exported_model_on_the_test_split(ddad_run, fmnist_data_dir, tmp_path):
    """``--evaluate``: the JAX student's and each ONNX file's accuracy on the prepared test split,
    recomputed here from the exported files; a missing split is an error before any writing."""
    out = str(tmp_path / "evaluated")
    result = export.export_student(ddad_run, out, int8=True, calibration_images=16, test_data_dir=fmnist_data_dir)
    t = result["test_accuracy"]
    spec = data.get_spec("fashion_mnist")
    images, labels = data.load_split(spec, "test", fmnist_data_dir)
    x = np.asarray(data.normalize(images, spec), np.float32)
    model, variables, _ = export.load_student(out)
    by_hand = {"jax": np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))}
    for key, name in (("onnx_fp32", export_onnx.FP32_ONNX), ("onnx_int8", export_onnx.INT8_ONNX)):
        by_hand[key] = export_onnx.onnx_logits(export_onnx.session(os.path.join(out, name)), x)
    assert t["examples"] == len(labels) == 10000
    for key, logits in by_hand.items():
        assert t[key] == pytest.approx(np.mean(logits.argmax(-1) == labels), abs=1e-9), key
    assert json.load(open(os.path.join(out, card_lib.STUDENT_CARD)))["test_accuracy"] == t
    assert 0.0 < t["jax"] < 1.0 and abs(t["onnx_fp32"] - t["jax"]) <= 2e-4  # fp32: JAX's logits, up to a tie
    with pytest.raises(UserError, match="--evaluate: .*fashion_mnist"):
        export.export_student(ddad_run, str(tmp_path / "never"), onnx=True, test_data_dir=str(tmp_path / "empty"))
    assert not os.path.exists(tmp_path / "never")


def test_cli_refuses_a_run_that_is_not_there_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import runpy  # pylint: disable=import-outside-toplevel
    from ddad_jax.export import cli  # pylint: disable=import-outside-toplevel
    out = tmp_path / "out"
    assert cli.main([f"--run={tmp_path / 'no_run'}", f"--out={out}", "--int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no_run" in err[0], err
    assert not out.exists()
    # python -m ddad_jax.export is the same main, its status the process's
    monkeypatch.setattr(sys, "argv", ["ddad_jax.export", f"--run={tmp_path / 'no_run'}", f"--out={out}"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("ddad_jax.export", run_name="__main__")
    assert exit_info.value.code == 2 and not out.exists()


def test_cli_report_says_what_was_written_and_measured():
    from ddad_jax.export import cli  # pylint: disable=import-outside-toplevel
    result = {"student_acc": 0.8057, "architecture": "lenet5_half", "out_dir": "/x/out",
              "files": {"card": "/x/out/student.json", "onnx_int8": "/x/out/student_int8.onnx"},
              "max_abs_logit_diff_fp32": 3.8e-6, "int8_top1_agreement_with_fp32": 0.9864, "calibration_images": 512,
              "calibration_method": "percentile",
              "test_accuracy": {"examples": 10000, "jax": 0.8057, "onnx_int8": 0.7861}}
    assert cli.report(result) == [
        "exported lenet5_half (test accuracy 0.8057) to /x/out: student.json, student_int8.onnx",
        "  ONNX fp32: max |logit - JAX logit| = 3.80e-06",
        "  ONNX int8: percentile calibration on 512 generator images; top-1 agrees with fp32 on 98.6 % of other "
        "generator images",
        "  on 10000 test images: JAX 80.57 %, ONNX int8 78.61 %"]
