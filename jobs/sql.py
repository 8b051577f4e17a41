"""sql: run Spark SQL over the project's tables, which are registered under their names."""

from __future__ import annotations

import csv
import json
import sys

HELP = 'run Spark SQL over the tables: sql "SELECT category, count(*) FROM queries GROUP BY 1"'
RECORD = False
WARM = True  # runs on `serve`'s warm session when one is up for this warehouse (distill.serve)


def add_arguments(parser) -> None:
    parser.add_argument("query", help="the SQL statement")
    parser.add_argument("--csv", action="store_true", help="print CSV with a header line instead of a table")
    parser.add_argument("--max-rows", type=int, default=1000, help="rows to print as a table (default 1000)")


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, (list, dict)) or hasattr(value, "asDict"):
        # keys sorted: a map's order is not part of its value (and classic Spark and Spark Connect differ in it)
        return json.dumps(_plain(value), ensure_ascii=False, default=str, sort_keys=True)
    return value


def _plain(value):
    if hasattr(value, "asDict"):
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def run(spark, cfg, args, rec) -> None:
    from distill.tables import register_tables

    register_tables(spark, cfg)
    df = spark.sql(args.query)
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(df.columns)
        for row in df.toLocalIterator():
            writer.writerow([_cell(v) for v in row])
    else:
        df.show(n=args.max_rows, truncate=False)
    sys.stdout.flush()
