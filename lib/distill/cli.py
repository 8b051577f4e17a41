"""`distill JOB [--conf FILE] [--set key=value ...] [job options]`

The same entry point serves `.venv/bin/distill` (local Spark started in-process) and `./submit.sh`
(spark-submit runs jobs/main.py, which calls this). JOB defaults to `pipeline`.

Exit codes: 0 done (bad input rows are data: they go to `quarantine`, the job still succeeds);
1 the job failed (recorded in `runs` with the error); 2 bad command line or config.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from distill.config import ConfigError, load_config

DEFAULT_CONF = "conf/local.yaml"
WARM_MISS = 75  # DISTILL_WARM_ONLY set and no server for this warehouse: the caller takes the cold path


def _job_modules() -> dict:
    from jobs import JOBS

    return {name: importlib.import_module(f"jobs.{name}") for name in JOBS}


def build_parser(modules: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill",
        description="Spark jobs that build verified reasoning-distillation datasets in Delta tables.",
        epilog="Run `distill JOB --help` for a job's options. Without JOB, runs `pipeline`.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", metavar="FILE",
                        help=f"YAML config (default: $DISTILL_CONF, else {DEFAULT_CONF} when present)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key, e.g. --set ingest.max_line_bytes=1000000 (repeatable)")
    sub = parser.add_subparsers(dest="job", metavar="JOB", title="jobs")
    for name, module in modules.items():
        job_parser = sub.add_parser(name, parents=[common], help=module.HELP, description=module.HELP)
        module.add_arguments(job_parser)
    return parser


def config_path(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.environ.get("DISTILL_CONF"):
        return os.environ["DISTILL_CONF"]
    return DEFAULT_CONF if os.path.isfile(DEFAULT_CONF) else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    modules = _job_modules()
    parser = build_parser(modules)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["pipeline", *argv]
    args = parser.parse_args(argv)
    try:
        cfg = load_config(config_path(args.conf), args.overrides)
    except ConfigError as err:
        print(f"distill: config error: {err}", file=sys.stderr)
        return 2

    from distill.spark import get_spark

    module = modules[args.job]
    if not getattr(module, "SPARK", True):  # plain-Python commands (verify) start no JVM
        return _run_job(module, None, cfg, args)
    if getattr(module, "WARM", False) and not _has_local_session():
        # sql: a warm session from `serve`, when one runs for this warehouse
        from distill import serve

        url = serve.find(cfg)
        if url is not None:
            return _run_job(module, serve.connect(url), cfg, args)
        if os.environ.get("DISTILL_WARM_ONLY"):
            return WARM_MISS
    try:
        spark = get_spark(cfg, module.spark_settings(args) if hasattr(module, "spark_settings") else None)
    except Exception as err:  # noqa: BLE001 - e.g. no Java, no Delta jars: say so without a traceback
        print(f"distill: cannot start Spark: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return _run_job(module, spark, cfg, args)


def _has_local_session() -> bool:
    """A classic Spark session already runs in this process (a notebook, a test): use it, not a server."""
    if "pyspark" not in sys.modules:
        return False
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None


def _run_job(module, spark, cfg, args) -> int:
    from distill.runs import RunRecorder

    try:
        if getattr(module, "RECORD", True):
            with RunRecorder(spark, cfg, args.job) as rec:
                ui = spark.sparkContext.uiWebUrl if spark is not None else None
                print(f"distill: {args.job} started (run_id {rec.run_id})" + (f"; Spark UI: {ui}" if ui else ""),
                      flush=True)
                module.run(spark, cfg, args, rec)
            print(f"distill: {args.job} finished (run_id {rec.run_id})")
        else:
            module.run(spark, cfg, args, None)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(f"distill: {stop.code}", file=sys.stderr)
            return 2
        raise
    except Exception as err:  # noqa: BLE001 - the run is recorded as failed; say why and exit 1
        if getattr(module, "RECORD", True):  # a pipeline job's crash: where it happened, for whoever looks into it
            traceback.print_exc(file=sys.stderr)
        print(f"distill: {args.job} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
