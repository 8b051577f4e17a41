"""experiment: run the configured experiments (`experiments:`): per variant a dataset from the ledger and the
stored scores, a student trained on it, its scores on evaluate.benchmarks, into `experiment_results`. Only
what is new costs anything: a re-run generates, scores, trains and evaluates nothing. How: distill.experiments.
"""

from __future__ import annotations

from distill.experiments import run_experiment

HELP = "compare data recipes: per variant a dataset, a student and its scores (`experiment_results`)"


def add_arguments(parser) -> None:
    parser.add_argument("--name", action="append", default=None, metavar="NAME",
                        help="only this experiment (repeatable; default: every configured one)")


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable
    from distill.tables import table_path

    names = [e.name for e in cfg.experiments]
    unknown = sorted(set(args.name or ()) - set(names))
    if unknown or not names:
        raise SystemExit(f"experiment: unknown experiment {unknown[0]!r} (configured: {', '.join(names)})" if unknown
                         else "experiment: no experiments configured (add `experiments:` to the config)")
    for name in ("queries", "attempts"):
        if not DeltaTable.isDeltaTable(spark, table_path(cfg, name)):
            raise SystemExit(f"experiment: no `{name}` table yet; run the pipeline (up to generate) first")
    for i, e in enumerate(cfg.experiments):
        if args.name is None or e.name in args.name:
            run_experiment(spark, cfg, rec, i)
