"""pipeline: the whole recipe, in order, in one Spark session. Each step records its own run.

This list is the recipe: ingest ->
prepare (dedup, filters, decontamination) -> generate (teachers + verify-until-0.9 loop) -> score
(perplexity, n-grams, structure) -> curate (thresholds) -> export -> train (a student per teacher)
-> evaluate (the students on benchmark sets) -> report (teachers and students compared).
"""

from __future__ import annotations

import argparse
import importlib

HELP = "run the whole pipeline (the default job)"

PIPELINE = (
    "ingest",
    "prepare",
    "generate",
    "score",
    "curate",
    "export",
    "train",
    "evaluate",
    "report",
)


def add_arguments(parser) -> None:
    parser.add_argument("--until", choices=PIPELINE, default=PIPELINE[-1],
                        help="stop after this step (e.g. `--until curate` to make the datasets only)")


def steps(until: str) -> tuple[str, ...]:
    return PIPELINE[:PIPELINE.index(until) + 1]


def run(spark, cfg, args, rec) -> None:
    from distill.runs import RunRecorder

    for name in steps(args.until):
        job = importlib.import_module(f"jobs.{name}")
        step_args = argparse.Namespace(**{**_defaults(job), **vars(args)})
        with rec.step(name), RunRecorder(spark, cfg, name) as step:
            job.run(spark, cfg, step_args, step)
        rec.count(f"{name}.succeeded", 1)


def _defaults(job) -> dict:
    parser = argparse.ArgumentParser()
    job.add_arguments(parser)
    return vars(parser.parse_args([]))
