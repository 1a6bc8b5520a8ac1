"""The benchmark scripts' pure helpers (their full runs are benchmarks, not tests)."""

import json
import os
import tempfile

import pytest

from benchmarks import common, fmnist_ddad, profile_ops

HLO = """HloModule jit_iteration

%fused_computation.1 (param_0: f32[8,4]) -> f32[4] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  ROOT %reduce.3 = f32[4]{0} reduce(%param_0, %c), dimensions={0}, to_apply=%add
}

%chunk_body (p: f32[2,3,3,1]) -> f32[3,3,1,4] {
  ROOT %convolution.31 = f32[3,3,1,4]{3,2,1,0} convolution(%p, %q), window={size=1x1}, dim_labels=b01f_01io->b01f
}

%ynn_fused (p0: f32[2,4,4,1], /*index=1*/p1: f32[3,3,1,2]) -> f32[2,4,4,2] {
  %conv.1 = f32[2,4,4,2]{3,2,1,0} convolution(%p0, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(iteration)/shard_map/student_step/jvp(student)/LeNet5/Conv_0/conv_general_dilated"}
  ROOT %max.1 = f32[2,4,4,2]{3,2,1,0} maximum(%conv.1, %zero)
}

ENTRY %main.9 (Arg_0: f32[8,4]) -> f32[4] {
  %ynn_fusion.8 = f32[2,4,4,2]{3,2,1,0} fusion(%a, %b), kind=kCustom, calls=%ynn_fused
  %conv_general_dilated.92 = f32[16,1,1,120]{3,2,1,0} convolution(%a, %b), window={size=5x5}, metadata={op_name="jit(iteration)/shard_map/student_step/jvp(student)/LeNet5/Conv_2/conv_general_dilated"}
  %call.4 = f32[3,3,1,4]{3,2,1,0} call(%x), to_apply=%chunk_body, metadata={op_name="jit(iteration)/shard_map/generator_step/transpose(jvp(generator))/Generator/Conv_1/conv_general_dilated"}
  %reduce_fusion.2 = f32[4]{0} fusion(%Arg_0), kind=kInput, calls=%fused_computation.1, metadata={op_name="jit(iteration)/shard_map/generator_step/teacher/LeNet5/BatchNorm_0/reduce_sum"}
  %all-reduce.7 = f32[4]{0} all-reduce(%reduce_fusion.2), replica_groups={}, to_apply=%add, metadata={op_name="jit(iteration)/shard_map/student_step/generator/Generator/BatchNorm_1/psum_invariant"}
  %tuple_fusion.6 = (f32[4]{0}, f32[4]{0}) fusion(%Arg_0), kind=kLoop, calls=%fused_computation.2, metadata={op_name="jit(iteration)/shard_map/generator_step/optimizer/add"}
  ROOT %loop_fusion.5 = f32[4]{0} fusion(%all-reduce.7), kind=kLoop, calls=%fused_computation.2, metadata={op_name="jit(iteration)/shard_map/student_step/optimizer/mul"}
}
"""


def test_hlo_index_names_each_op_and_inherits_metadata_from_its_caller():
    index = profile_ops.hlo_index(HLO)
    assert index["conv_general_dilated.92"][0] == "convolution"
    assert index["reduce_fusion.2"][:2] == ["fusion", "kInput"]
    assert index["tuple_fusion.6"][:2] == ["fusion", "kLoop"]  # a tuple-shaped result
    # no metadata of its own: takes the op_name of the call that runs its computation
    assert "transpose(jvp(generator))" in index["convolution.31"][2]


def test_ops_are_sorted_into_parts_and_kinds():
    index = profile_ops.hlo_index(HLO)
    parts = {name: profile_ops.part_of(entry[2]) for name, entry in index.items() if entry[2]}
    assert parts["conv_general_dilated.92"] == "student_step/student"
    assert parts["convolution.31"] == "generator_step/generator"
    assert parts["reduce_fusion.2"] == "generator_step/teacher"
    assert parts["all-reduce.7"] == "student_step/generator"
    assert parts["loop_fusion.5"] == "student_step/optimizer"
    assert parts["ynn_fusion.8"] == "student_step/student"  # no metadata: named after what it runs
    kind = lambda name: profile_ops.kind_of(*index[name][:2], name, *index[name][2:])
    assert kind("conv_general_dilated.92") == "convolution, forward"
    assert kind("convolution.31") == "convolution, backward"
    assert kind("call.4") == "convolution, backward"  # runs a convolution inside
    assert kind("ynn_fusion.8") == "convolution, forward"  # a YNNPACK fusion around a convolution
    assert kind("reduce_fusion.2").startswith("reduction fusion")
    assert kind("all-reduce.7").startswith("collective")
    assert kind("loop_fusion.5") == "elementwise fusion"
    assert profile_ops.part_of("jit(iteration)/threefry2x32") == "other (noise, replay, bookkeeping)"


def test_time_to_accuracy_takes_the_first_evaluation_at_or_above_each_target(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "time": 110.0, "gen/loss": 1.0}, {"step": 25, "time": 150.0, "test/student_accuracy": 0.70},
            {"step": 50, "time": 160.0, "test/student_accuracy": 0.79},
            {"step": 75, "time": 220.0, "test/student_accuracy": 0.74},
            {"step": 100, "time": 280.0, "test/student_accuracy": 0.80}]
    lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines[:2] + ['{"step": 40, "time": 15'] + lines[2:] + ['{"step": 125, "ti']))
    # default targets 75 % and 80 %; torn lines (an interrupted write) are skipped
    assert fmnist_ddad.time_to_accuracy(str(path), start=100.0) == [60.0, 180.0]
    assert fmnist_ddad.time_to_accuracy(str(path), start=100.0, targets=(0.7, 0.85)) == [50.0, None]


def _result(**changes):
    result = {"seeds": [0, 1, 3], "teacher_acc": [0.91, 0.90, 0.90], "student_acc": [0.76, 0.72, 0.80],
              "wall_s": [900, 960, 1020], "teacher_wall_s": [180, 190, 200], "time_to_75_s": [300, None, 240],
              "time_to_80_s": [None, None, 600], "commit": ["abc", "abc", "def"], "heldout_seeds": [3, 4, 5],
              "teacher": "lenet5_bn", "student": "lenet5_half", "iterations": 1500, "finetune_iterations": 400,
              "machine": "x86_64, 2 CPU cores, 4 JAX device(s)", "command": "python benchmarks/fmnist_ddad.py"}
    return {**result, **changes}


def test_results_table_has_a_row_per_seed_and_summaries_for_tuned_and_held_out_seeds():
    table = fmnist_ddad.markdown(_result())
    assert "| 0 | 91.00 | 76.00 | 5.0 | never | 15.0 |" in table
    assert "| 1 | 90.00 | 72.00 | never | never | 16.0 |" in table
    assert "| 3 (held out) | 90.00 | 80.00 | 4.0 | 10.0 | 17.0 |" in table
    assert "| **seeds 0–2 (tuned on)** | 90.50 ± 0.71 | **74.00 ± 2.83** | | | |" in table
    assert "| **seeds 3–5 (held out)** | 90.00 (1 seed) | **80.00 (1 seed)** | | | |" in table
    assert "| **all seeds** | 90.33 ± 0.58 | **76.00 ± 4.00** | | | |" in table
    assert "1500 iterations + 400 student-only fine-tuning iterations" in table
    assert table.endswith("Regenerate: `python benchmarks/fmnist_ddad.py`")
    tuned_only = fmnist_ddad.markdown(_result(seeds=[0, 1], finetune_iterations=0))
    assert "(held out)" not in tuned_only  # neither a held-out row nor its summary
    assert "fine-tuning" not in tuned_only


def test_merge_adds_and_replaces_seeds_and_keeps_the_lists_sorted_by_seed():
    old = _result()
    new = {"seeds": [2, 1], "teacher_acc": [0.89, 0.92], "student_acc": [0.70, 0.78], "wall_s": [1, 2],
           "teacher_wall_s": [3, 4], "time_to_75_s": [None, 5], "time_to_80_s": [None, None],
           "commit": ["new", "new"], "machine": "elsewhere"}
    merged = fmnist_ddad.merge(old, new)
    assert merged["seeds"] == [0, 1, 2, 3]
    assert merged["student_acc"] == [0.76, 0.78, 0.70, 0.80]  # seed 1 replaced, seed 2 added
    assert merged["time_to_75_s"] == [300, 5, None, 240]
    assert merged["commit"] == ["abc", "new", "new", "def"]
    assert merged["machine"] == "elsewhere" and merged["command"] == old["command"]  # run-level: newest wins
    first = fmnist_ddad.merge(None, new)  # no results file yet
    assert first["seeds"] == [1, 2] and first["student_acc"] == [0.78, 0.70]


def test_a_finished_run_is_reused_only_with_the_same_arguments_and_code(tmp_path, monkeypatch):
    workdir, launched = str(tmp_path / "run"), []
    monkeypatch.setattr(common, "run_stage", lambda args, log: launched.append(list(args)) or 12.5)
    monkeypatch.setattr(common, "code_version", lambda: "tree-a")
    assert common.run_once(["--x=1"], workdir) == 12.5 and launched == [["--x=1"]]
    assert json.load(open(workdir + ".run.json")) == {"args": ["--x=1"], "wall_s": 12.5, "code": "tree-a"}
    assert common.run_once(["--x=1"], workdir) == 12.5 and len(launched) == 1  # collected, not rerun
    with pytest.raises(SystemExit, match="other arguments"):
        common.run_once(["--x=2"], workdir)
    monkeypatch.setattr(common, "code_version", lambda: "tree-b")  # a config's defaults changed
    with pytest.raises(SystemExit, match="other code"):
        common.run_once(["--x=1"], workdir)
    assert len(launched) == 1


def test_code_version_is_the_code_trees_not_the_commit():
    version = common.code_version()
    assert version == "unknown" or len(version.split("+")[0].split("-")) == len(common.CODE)


def test_publish_writes_markdown_and_json(tmp_path):
    table = common.publish("x", "A title", "| a |", {"k": 1}, directory=str(tmp_path))
    assert table == "| a |"
    assert (tmp_path / "x.md").read_text() == "# A title\n\n| a |\n"
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": 1}
    common.publish("y", "T", "t", directory=str(tmp_path))  # no data: Markdown only
    assert not (tmp_path / "y.json").exists()


def test_readme_summary_groups_tuned_and_held_out_seeds():
    summary = fmnist_ddad.readme_markdown(_result())
    assert "| 0–2 (tuned on) | 90.50 ± 0.71 | **74.00 ± 2.83** | 0 of 2 | 15.5 |" in summary
    assert "| 3–5 (held out) | 90.00 (1 seed) | **80.00 (1 seed)** | 1 of 1 | 17.0 |" in summary
    assert "| all | 90.33 ± 0.58 | **76.00 ± 4.00** | 1 of 3 | 16.0 |" in summary
    assert "| 0 |" not in summary  # per-seed rows stay in the .md


def test_method_rows_merge_per_method_data_and_seed():
    rows = common.merge_rows([], "KD", "all", 1, {"student_acc": 0.8, "wall_s": 60, "teacher_acc": 0.9, "commit": "a"})
    rows = common.merge_rows(rows, "KD", "all", 0, {"student_acc": 0.7, "wall_s": 50, "teacher_acc": 0.91,
                                                    "commit": "b"}, {"machine": "m"})
    rows = common.merge_rows(rows, "STKD", "all", 0, {"student_acc": 0.75, "wall_s": 55})
    rows = common.merge_rows(rows, "KD", "all", 1, {"student_acc": 0.82, "wall_s": 61, "teacher_acc": 0.9,
                                                    "commit": "c"})  # rerun: replaced
    assert [(r["method"], r["seeds"]) for r in rows] == [("KD", [0, 1]), ("STKD", [0])]
    assert rows[0]["student_acc"] == [0.7, 0.82] and rows[0]["commit"] == ["b", "c"] and rows[0]["machine"] == "m"
    assert rows[1]["teacher_acc"] == [None]
    assert common.mean_std([0.7, 0.82]) == "76.00 ± 8.49" and common.mean_std([None]) == "–"
    assert common.mean_std([0.8057, None]) == "80.57 (1 seed)"  # no '± 0.00' spread from one value


def test_kd_and_hybrid_tables():
    from benchmarks import fmnist_hybrid, fmnist_supervised  # pylint: disable=import-outside-toplevel
    row = {"method": "stkd", "data": fmnist_supervised.DATA, "seeds": [0, 1], "student_acc": [0.85, 0.87],
           "wall_s": [120, 180], "teacher_acc": [0.9, 0.91], "commit": ["a", "a"], "machine": "m"}
    table = fmnist_supervised.markdown([row])
    assert "| STKD | 86.00 ± 1.41 | 0, 1 | 2.5 |" in table and "90.50 ± 0.71 %" in table
    hybrid = fmnist_hybrid.markdown([{**row, "method": "HiDFD", "data": "600 real images"}])
    assert "| HiDFD | 600 real images | 86.00 ± 1.41 | 0, 1 | 2.5 |" in hybrid


def test_datafree_curve_time_to_80_table_and_plot(tmp_path):
    from benchmarks import fmnist_datafree  # pylint: disable=import-outside-toplevel
    run = tmp_path / "run"
    run.mkdir()
    records = [{"step": 10, "gen/loss": 1.0, "elapsed_s": 5.0},
               {"step": 25, "test/student_accuracy": 0.62, "elapsed_s": 60.04},
               {"step": 50, "test/student_accuracy": 0.81, "elapsed_s": 121.0},
               {"step": 75, "test/student_accuracy": 0.79, "elapsed_s": 180.0}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    curve = fmnist_datafree.read_curve(str(run))
    assert curve == [[60.0, 0.62], [121.0, 0.81], [180.0, 0.79]]
    assert fmnist_datafree.time_to(curve) == 121.0 and fmnist_datafree.time_to(curve, 0.9) is None
    rows = common.merge_rows([], "CMI", "no data", 0, {"student_acc": 0.79, "wall_s": 700, "teacher_acc": 0.9,
                                                        "time_to_80_s": 121.0, "curve": curve}, {"machine": "m"},
                             fmnist_datafree.KEYS)
    rows = common.merge_rows(rows, "CMI", "no data", 1, {"student_acc": 0.75, "wall_s": 740, "teacher_acc": 0.91,
                                                          "time_to_80_s": None, "curve": curve}, {"machine": "m"},
                             fmnist_datafree.KEYS)
    rows[0]["synthetic_images"] = 7680
    table = fmnist_datafree.markdown(rows)
    assert "| CMI | 77.00 ± 2.83 | 0, 1 | 2.0 (1/2 seeds) | 7,680 | 12.0 | 3, 3 |" in table
    assert "90.50 ± 0.71 %" in table and "12 minutes" in table
    # a second method on the same seeded teachers: each teacher counted once
    rows = common.merge_rows(rows, "DDAD", "no data", 0, {"student_acc": 0.8, "wall_s": 600, "teacher_acc": 0.9,
                                                          "time_to_80_s": None, "curve": curve}, {"machine": "m"},
                             fmnist_datafree.KEYS)
    assert "90.50 ± 0.71 %" in fmnist_datafree.markdown(rows)
    # DDAD+'s ablation rows are on the results page, not in the README's table
    ablation = "DDAD+ without the pool"
    assert ablation in fmnist_datafree.ABLATION
    rows = common.merge_rows(rows, ablation, "no data", 0, {"student_acc": 0.7, "wall_s": 600, "teacher_acc": 0.9,
                                                            "time_to_80_s": None, "curve": curve}, {"machine": "m"},
                             fmnist_datafree.KEYS)
    assert f"| {ablation} |" in fmnist_datafree.markdown(rows)
    readme = fmnist_datafree.readme_summary(rows)
    assert f"| {ablation} |" not in readme and "| DDAD |" in readme and "DDAD+'s ablation" in readme
    assert fmnist_datafree.ablation_table(rows).endswith("| 0 | – |")  # no DDAD+ row to pair it with yet
    png = tmp_path / "plot.png"
    assert fmnist_datafree.plot(rows, str(png))
    assert png.stat().st_size > 10_000


def test_datafree_per_class_collected_only_from_the_recorded_run(tmp_path, monkeypatch):
    from benchmarks import fmnist_datafree  # pylint: disable=import-outside-toplevel
    for name, acc in (("teacher_seed0", {"test_acc": 0.9}), ("cmi_seed0", {"student_acc": 0.7, "stopped_at_step": 55}),
                      ("teacher_seed1", {"test_acc": 0.91}), ("cmi_seed1", {"student_acc": 0.55})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(acc))
    monkeypatch.setattr(fmnist_datafree, "per_class_accuracy",
                        lambda workdir, teacher_dir: ([0.5] * 10, [0.9] * 9 + [0.7]))
    rows = []
    for seed, acc in ((0, 0.7), (1, 0.6)):  # seed 1's workdir holds another run (0.55)
        rows = common.merge_rows(rows, "CMI", "no data", seed, {"student_acc": acc, "teacher_acc": 0.9 + seed / 100},
                                 {}, fmnist_datafree.KEYS)
    rows = fmnist_datafree.collect_per_class(rows, str(tmp_path), ["cmi"], [0, 1])
    assert rows[0]["per_class_acc"] == [[0.5] * 10, None]
    assert rows[0]["stopped_at_step"] == [55, None]  # where the budget stopped seed 0's run
    table = fmnist_datafree.per_class_table(rows)
    assert "| *teacher* (1 seed) | 90.0 | " in table and "| 70.0 |" in table
    assert "| CMI (1 seed) | 50.0 |" in table
    assert fmnist_datafree.per_class_table(rows[:0]) == ""


def test_datafree_ablation_is_paired_with_ddad_plus_on_the_same_seeds():
    from benchmarks import fmnist_datafree  # pylint: disable=import-outside-toplevel
    row = lambda method, seeds, accs: {"method": method, "seeds": seeds, "student_acc": accs,
                                       "wall_s": [600.0] * len(seeds), "teacher_acc": [0.9] * len(seeds)}
    rows = [row("DDAD+", [0, 1], [0.80, 0.76]),
            # seed 2 has no DDAD+ run: it counts in the row's mean, not in the paired difference
            row("DDAD+ without the pool", [0, 1, 2], [0.75, 0.74, 0.70])]
    table = fmnist_datafree.ablation_table(rows)
    # differences -5 and -2 points: mean -3.50, sample std sqrt(4.5) = 2.12
    assert "| DDAD+ without the pool | 73.00 ± 2.65 | 0, 1, 2 | -3.50 ± 2.12 |" in table
    # a run the time budget stopped is short of the other's epochs: not paired
    rows[1]["stopped_at_step"] = [1500, None, None]
    assert "| 0, 1, 2 | -2.00 (1 seed) |" in fmnist_datafree.ablation_table(rows)
    rows[1]["stopped_at_step"] = [1500, 1600, 1700]
    assert "| 0, 1, 2 | – (the budget stopped its run) |" in fmnist_datafree.ablation_table(rows)
    rows[1]["stopped_at_step"] = [None, None, None]
    assert fmnist_datafree.run_budget("ddad_plus-no_pool", 720.0) == 0.0  # the ablation runs uncapped
    assert fmnist_datafree.run_budget("dfq", 720.0) == 720.0
    page = fmnist_datafree.markdown(rows)
    assert "| DDAD+ without the pool |" not in page.split("What each part")[0]  # not in the methods table
    assert table in page


def test_smoke_stage_runs_each_config_at_its_smoke_size():
    prepare = ["-m", "ddad_jax.data.prepare", "fashion_mnist"]
    assert common.smoke_stage(prepare) == prepare  # no config: as it is
    run = ["-m", "experiments.fashion_mnist", "--workdir=w", "--config.seed=1"]
    assert common.smoke_stage([*run, "--config=configs/teacher.py:fashion_mnist"])[-1] == \
        "--config=configs/teacher.py:fashion_mnist,smoke"
    assert common.smoke_stage(["--config=configs/fmnist_lenet5.py"]) == ["--config=configs/fmnist_lenet5.py:smoke"]
    kd = common.smoke_stage(["--config=configs/fmnist_lenet5_kd.py", "--config.train_examples=600",
                             "--config.steps_per_epoch=200", "--config.num_epochs=10", "--config.student_objective=kd"])
    # a row's larger sizes take the smoke form's; what it does not shrink stays
    assert kd == ["--config=configs/fmnist_lenet5_kd.py:smoke", "--config.train_examples=600",
                  "--config.steps_per_epoch=2", "--config.num_epochs=2", "--config.student_objective=kd"]
    ablation = common.smoke_stage(["--config=configs/ddad_plus.py:fashion_mnist", "--config.pool_size=0",
                                   "--config.time_budget_s=720.0", *run])
    assert ablation[1] == "--config.pool_size=0"  # smaller than the smoke form's 4: the ablation's own
    assert common.smoke_stage(ablation) == ablation  # twice = once
    timed = common.smoke_stage(["--config=configs/cmi.py:fashion_mnist", "--config.time_budget_s=720.0"])
    assert timed == ["--config=configs/cmi.py:fashion_mnist,smoke", "--config.time_budget_s=0.0"]


def test_smoke_mode_writes_elsewhere_and_refuses_the_published_results(tmp_path, capsys):
    import argparse  # pylint: disable=import-outside-toplevel

    def parse(*argv):
        parser = argparse.ArgumentParser()
        parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        parser.add_argument("--out", default="runs/x")
        parser.add_argument("--render", action="store_true")
        return common.parse_args(parser, {"seeds": [0]}, list(argv))

    try:
        args = parse("--smoke", f"--results={tmp_path}")
        assert (args.seeds, args.results, args.out) == ([0], str(tmp_path), str(tmp_path / "runs"))
        assert common.stage_args(["--config=configs/fmnist_lenet5.py"]) == ["--config=configs/fmnist_lenet5.py:smoke"]
        args = parse("--smoke", "--seeds", "3", "--out=o")  # what the caller passes wins
        assert (args.seeds, args.out) == ([3], "o") and args.results.startswith(tempfile.gettempdir())
        os.rmdir(args.results)
        for argv, message in (((f"--results={common.RESULTS}",), "never writes benchmarks/results"),
                              (("--render",), "runs the benchmark; it does not combine with --render")):
            with pytest.raises(SystemExit, match=f"^error: --smoke {message}"):
                parse("--smoke", *argv)
        args = parse()
        assert (args.seeds, args.results, args.out) == ([0, 1, 2], common.RESULTS, "runs/x")
        assert common.stage_args(["--config=configs/fmnist_lenet5.py"]) == ["--config=configs/fmnist_lenet5.py"]
    finally:
        common._SMOKE["on"] = False  # pylint: disable=protected-access
    assert common.publishes_readme(common.RESULTS) and not common.publishes_readme(str(tmp_path))
