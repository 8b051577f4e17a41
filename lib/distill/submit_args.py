"""Print the spark-submit arguments for a config, one per line (submit.sh reads them).

The settings are the session factory's (distill.spark.default_settings), so a spark-submit run and an
in-process run get the same Spark. Driver settings (memory, jars) must be given to spark-submit:
its JVM starts before our code runs.
"""

from __future__ import annotations

import sys

from distill.cli import config_path
from distill.config import ConfigError, load_config
from distill.spark import default_settings


def submit_args(conf: str | None, overrides: list[str], py_files: str | None, java_options: str = "") -> list[str]:
    cfg = load_config(conf, overrides)
    settings = default_settings(cfg)
    out = ["--master", settings.pop("spark.master"), "--name", settings.pop("spark.app.name")]
    out += ["--jars", settings.pop("spark.jars")]
    # submit.sh's own driver options (its log4j file) and the config's: spark-submit takes one string
    java = " ".join(o for o in (java_options, settings.pop("spark.driver.extraJavaOptions", "")) if o)
    if java:
        out += ["--driver-java-options", java]
    if py_files:
        out += ["--py-files", py_files]
    for key, value in sorted(settings.items()):
        out += ["--conf", f"{key}={value}"]
    return out


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--conf")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--py-files")
    parser.add_argument("--driver-java-options", default="")
    args, _ = parser.parse_known_args(argv)
    try:
        print("\n".join(submit_args(config_path(args.conf), args.overrides, args.py_files,
                                     args.driver_java_options)))
    except ConfigError as err:
        print(f"distill: config error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
