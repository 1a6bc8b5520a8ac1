"""The benchmark scripts' pure helpers (their full runs are benchmarks, not tests)."""

import json

from benchmarks import fmnist_ddad, profile_ops

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
    rows = [{"step": 1, "time": 110.0, "gen/loss": 1.0}, {"step": 25, "time": 160.0, "test/student_accuracy": 0.79},
            {"step": 50, "time": 220.0, "test/student_accuracy": 0.81},
            {"step": 75, "time": 280.0, "test/student_accuracy": 0.80}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert fmnist_ddad.time_to_accuracy(str(path), start=100.0) == [120.0, None]


def test_results_table_names_the_replay_memory_when_used():
    result = {"student_acc": [0.8, 0.82], "wall_s": [600, 660], "time_to_80_85_s": [[300, None], [None, None]],
              "seeds": [0, 1], "teacher": "lenet5_bn", "teacher_acc": 0.9069, "teacher_wall_s": 280,
              "student": "lenet5_half", "iterations": 1500, "machine": "x", "command": "python b.py",
              "replay_slots": 100}
    table = fmnist_ddad.markdown(result)
    assert "replaying the last 100 generated batches" in table
    assert "| **mean** | **81.00** (± 1.00) | 10.5 (median) | | |" in table
    assert "| 0 | 80.00 | 10.0 | 5.0 | not reached |" in table
    assert "replaying" not in fmnist_ddad.markdown({**result, "replay_slots": 0})
    assert "fine-tuning" not in table
    tuned = fmnist_ddad.markdown({**result, "finetune_iterations": 50})
    assert "1500 iterations then 50 of student-only fine-tuning on the frozen generator" in tuned


def test_publish_writes_markdown_and_json(tmp_path):
    from benchmarks import common  # pylint: disable=import-outside-toplevel
    table = common.publish("x", "A title", "| a |", {"k": 1}, directory=str(tmp_path))
    assert table == "| a |"
    assert (tmp_path / "x.md").read_text() == "# A title\n\n| a |\n"
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": 1}
    common.publish("y", "T", "t", directory=str(tmp_path))  # no data: Markdown only
    assert not (tmp_path / "y.json").exists()
