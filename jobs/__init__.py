"""Thin job entry points: each parses its arguments, reads tables, applies stages, writes tables.

A job module has HELP, `add_arguments(parser)` and `run(spark, cfg, args, recorder)`. Jobs that only
read (sql) set RECORD = False and are not written to `runs`.
"""

# Every job the CLI and submit.sh offer, in the order `distill --help` lists them. The pipeline's
# own order is jobs/pipeline.py's PIPELINE.
JOBS = ("pipeline", "ingest", "prepare", "generate", "score", "curate", "report", "export", "train", "evaluate",
        "experiment", "maintain", "sql", "serve", "verify")
