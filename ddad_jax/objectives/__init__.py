"""Objectives by name: the generator's terms and the student's objectives.

A method's config names them, e.g. ``generator_terms = {"bn": 1.0, "adversarial": 1.0}``
(a term with parameters: ``{"adversarial_js": {"weight": 1.0, "temperature": 3.0}}``)
and ``student_objective = "l1"``; each is a small pure function with a hand-computed test
(``tests/test_objectives.py``). A new method is a config plus, at most, a new function here.
"""

from ddad_jax.objectives.generator import (GENERATOR_TERMS, NEEDS_CONTRAST, NEEDS_STUDENT, NEEDS_TARGETS,
                                           TERM_PARAMETERS, Synthesis, Term, blend_statistics, generator_loss,
                                           parse_terms, term_names, terms_summary)
from ddad_jax.objectives.student import (NEEDS_FEATURES, NEEDS_LABELS, NEEDS_SCRATCH, NO_TEACHER,
                                         STUDENT_OBJECTIVES, USES_MIXUP, Distill, KDParams, kl, l1,
                                         student_objective)
from ddad_jax.objectives.supervised import accuracy, cross_entropy

__all__ = ["GENERATOR_TERMS", "NEEDS_CONTRAST", "NEEDS_FEATURES", "NEEDS_LABELS", "NEEDS_SCRATCH", "NEEDS_STUDENT", "NEEDS_TARGETS",
           "NO_TEACHER", "STUDENT_OBJECTIVES", "TERM_PARAMETERS", "USES_MIXUP", "Distill", "KDParams", "Synthesis", "Term",
           "accuracy", "blend_statistics", "cross_entropy", "generator_loss", "kl", "l1", "parse_terms",
           "student_objective", "term_names", "terms_summary"]
