"""serve: keep a warm Spark session for `sql` (Spark Connect on 127.0.0.1) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time

HELP = "keep a warm Spark session that `sql` uses (answers in about a second); stop it with Ctrl-C"
RECORD = False


def add_arguments(parser) -> None:
    from distill.serve import DEFAULT_PORT

    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")


def spark_settings(args) -> dict[str, str]:
    from distill.serve import settings

    return settings(args.port)


def run(spark, cfg, args, rec) -> None:
    from distill.serve import publish
    from distill.tables import register_tables

    names = register_tables(spark, cfg)
    for name in names:  # load each table's Delta snapshot now, not on a user's first query (count: metadata)
        spark.sql(f"SELECT count(*) FROM {name}").collect()
    state = publish(cfg, args.port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C: the file goes
    print(f"distill: serving {len(names)} tables of {cfg.warehouse} on sc://127.0.0.1:{args.port}; "
          "`./submit.sh sql` uses it. Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("distill: serve stopped", flush=True)
    finally:
        state.unlink(missing_ok=True)
