"""evaluate: every configured student (evaluate.students: one `train` made, found by name in `students`, or any
model given as a teacher is) answers every benchmark of evaluate.benchmarks; the samples go to `eval_samples`,
the figures to `eval_results`. How: distill.evaluation.
"""

from __future__ import annotations

from distill.evaluation import EVALUATION_TABLES, configured_students, evaluate
from distill.settled import Settled

HELP = "evaluate the students on benchmark sets: k samples per item, verified (`eval_samples`, `eval_results`)"


def add_arguments(parser) -> None:
    parser.add_argument("--student", action="append", default=None, metavar="NAME",
                        help="only this student (repeatable; default: all configured)")


def run(spark, cfg, args, rec) -> None:
    e = cfg.evaluate
    if not e.benchmarks or not e.students:
        print("evaluate: nothing to evaluate (evaluate.benchmarks and evaluate.students are both needed)")
        return
    state = Settled(spark, cfg, rec, EVALUATION_TABLES)  # before `students` is read
    evaluate(spark, cfg, rec, configured_students(spark, cfg, args.student), state)
