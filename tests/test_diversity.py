"""The collapse measure: hand-computed values, and a deliberately collapsed generator flagged."""

import jax
import jax.numpy as jnp
import numpy as np

from ddad_jax import diversity
from ddad_jax.models.features import apply_with_features


def test_class_entropy_hand_computed():
    eye = jnp.eye(4)
    # every class once: entropy log 4 / log 4 = 1
    np.testing.assert_allclose(diversity.class_entropy(eye), 1.0, rtol=1e-6)
    # all one class: 0
    np.testing.assert_allclose(diversity.class_entropy(jnp.tile(eye[:1], (5, 1))), 0.0, atol=1e-7)
    # classes 0, 0, 1, 1 of 4: log 2 / log 4 = 0.5
    np.testing.assert_allclose(diversity.class_entropy(eye[jnp.array([0, 0, 1, 1])]), 0.5, rtol=1e-6)


def test_feature_distance_hand_computed():
    # unit vectors e1, e2: each of the 2 ordered pairs at distance sqrt(2)
    np.testing.assert_allclose(diversity.feature_distance(jnp.eye(2)), np.sqrt(2), rtol=1e-5)
    # identical images (scale does not matter: features are normalised)
    np.testing.assert_allclose(diversity.feature_distance(jnp.array([[1.0, 1.0], [3.0, 3.0]])), 0.0, atol=1e-5)
    # e1, e1, -e1: pairs (0,1) 0, (0,2) 2, (1,2) 2 -> 6 ordered pairs summing to 8
    f = jnp.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(diversity.feature_distance(f), 8.0 / 6.0, rtol=1e-5)
    # near-copies: unit vectors at angle t apart are 2 sin(t/2) ~ t = 1e-3 apart; in float32,
    # 2 - 2 cos(t) loses it (cos(1e-3) = 1 - 5e-7, near float32's resolution of 6e-8 there)
    t = 1e-3
    f = jnp.array([[np.cos(a), np.sin(a), 0.0] for a in (0.0, t, 2 * t)], jnp.float32)
    np.testing.assert_allclose(diversity.feature_distance(f), 2 * (t + t + 2 * t) / 6, rtol=1e-2)


def test_a_collapsed_generator_is_flagged_and_a_healthy_one_is_not():
    from ddad_jax import models
    teacher = models.get_classifier("lenet5_bn", 10)
    t_vars = jax.jit(teacher.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))  # compiled, not op by op
    run = jax.jit(lambda x: apply_with_features(teacher, t_vars, x))
    collapsed = jnp.tile(jax.random.normal(jax.random.key(1), (1, 32, 32, 1)), (64, 1, 1, 1))  # one image, 64 times
    logits, feats, _ = run(collapsed)
    metrics = {"diversity/class_entropy": float(diversity.class_entropy(logits)),
               "diversity/feature_distance": float(diversity.feature_distance(feats["penultimate"]))}
    warning = diversity.collapse_warning(metrics)
    assert warning and "few classes" in warning and "near-copies" in warning
    assert diversity.collapse_warning({"diversity/class_entropy": 0.9, "diversity/feature_distance": 0.8}) is None
    assert "few classes" in diversity.collapse_warning({"diversity/class_entropy": 0.3})


def test_the_loop_says_once_when_the_generator_collapses(tmp_path, capsys):
    """A stand-in run whose diversity drops at step 3: one warning line, at step 3."""
    import flax
    from ddad_jax import trainers, loop

    @flax.struct.dataclass
    class Toy:
        step: jnp.ndarray

    def step(n, state):
        entropy = 0.9 if n < 3 else 0.2
        return Toy(jnp.asarray(n)), {"diversity/class_entropy": jnp.asarray(entropy)}

    run = trainers.Run(name="toy", state=Toy(jnp.asarray(0)), place=lambda s: s, step=step, total_steps=6,
                    steps_per_epoch=3, identity={"toy": 1}, evaluate=lambda s: {"test/accuracy": 0.5},
                    summarize=lambda s, e, w: {"wall_s": w}, log_every=1)
    loop.train(run, str(tmp_path / "toy"))
    warnings = [l for l in capsys.readouterr().out.splitlines() if "warning" in l]
    assert len(warnings) == 1 and "step 3" in warnings[0] and "class entropy 0.20" in warnings[0], warnings


def test_a_student_stuck_far_below_the_teacher_is_flagged():
    stuck = diversity.stuck_student_warning
    assert stuck([0.5, 0.1, 0.1, 0.1], 0.9).startswith("student stuck: its test accuracy has been 0.1000 for 3")
    assert stuck([0.1, 0.1], 0.9) is None  # too few evaluations to say
    assert stuck([0.1, 0.1001, 0.1], 0.9) is None  # it moves: alive
    assert stuck([0.2, 0.2, 0.2], 0.9) is None  # a plateau above a fifth of the teacher's 0.9
    assert stuck([0.1, 0.1, 0.1], None) is None  # no teacher figure to compare with


def test_the_loop_says_once_when_the_student_is_stuck(tmp_path, capsys):
    """A stand-in run whose student accuracy stops at 0.1 from the 2nd evaluation: one warning,
    at the 4th (the third equal value)."""
    import flax
    from ddad_jax import trainers, loop

    @flax.struct.dataclass
    class Toy:
        step: jnp.ndarray

    accuracy = lambda s: {"test/student_accuracy": 0.6 if int(s.step) <= 1 else 0.1, "test/teacher_accuracy": 0.9}
    run = trainers.Run(name="toy", state=Toy(jnp.asarray(0)), place=lambda s: s, step=lambda n, s: (Toy(jnp.asarray(n)), {}),
                    total_steps=6, steps_per_epoch=1, identity={"toy": 1}, evaluate=accuracy,
                    summarize=lambda s, e, w: {"wall_s": w}, log_every=1)
    loop.train(run, str(tmp_path / "toy"))
    warnings = [l for l in capsys.readouterr().out.splitlines() if "student stuck" in l]
    assert len(warnings) == 1 and "warning at step 4" in warnings[0], warnings
