"""A warm Spark session for `sql`: `./submit.sh serve` keeps one running behind Spark Connect.

Starting a JVM and a Spark session costs 20-35 s on a small machine; the query after it, milliseconds. The
`serve` job starts the session once, with the Spark Connect plugin listening on 127.0.0.1, registers the
warehouse's tables in its catalog, and writes a small state file into the warehouse folder. `sql` looks
for that file first: when the server it names is alive and serves the same warehouse, the query runs there
through a thin Connect client (a Python start-up, no JVM); otherwise `sql` starts its own session as before.
The SQL engine is the same Spark either way, so a query reads the same and prints the same.

Only a local warehouse is served: the server binds to loopback and its state file lives in the warehouse
folder, where every `sql` of this checkout looks.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from distill.config import Config
from distill.spark import quiet_query_loggers, resolve_path

STATE = ".distill-serve.json"  # in the warehouse folder: {"url", "pid", "warehouse"}
DEFAULT_PORT = 15002  # Spark Connect's own default
PLUGIN = "org.apache.spark.sql.connect.SparkConnectPlugin"


def state_file(cfg: Config) -> Path | None:
    """Where a server for this warehouse announces itself; None for a remote warehouse (never served)."""
    warehouse = resolve_path(cfg.warehouse)
    if "://" in warehouse or warehouse.startswith("file:"):
        return None
    return Path(warehouse) / STATE


def settings(port: int) -> dict[str, str]:
    """Spark settings that make the session a Spark Connect server on 127.0.0.1:port."""
    return {"spark.plugins": PLUGIN, "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(port),
            # errors read as the cold path's: the message, without the server's JVM stack trace
            "spark.sql.connect.serverStacktrace.enabled": "false", "spark.sql.pyspark.jvmStacktrace.enabled": "false"}


def publish(cfg: Config, port: int) -> Path:
    """Announce this process as the warehouse's server; returns the state file (remove it on the way out)."""
    path = state_file(cfg)
    if path is None:
        raise SystemExit(f"serve: only a local warehouse can be served, not {cfg.warehouse!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": f"sc://127.0.0.1:{port}", "pid": os.getpid(),
                               "warehouse": resolve_path(cfg.warehouse)}))
    tmp.replace(path)  # whole or absent: a reader never sees half a file
    return path


def find(cfg: Config) -> str | None:
    """The Connect URL of a live server for this warehouse, or None (no server, a dead one, another warehouse)."""
    path = state_file(cfg)
    try:
        state = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("warehouse") != resolve_path(cfg.warehouse):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (KeyError, ValueError, TypeError, ProcessLookupError, PermissionError):
        return None
    url = urlparse(str(state.get("url", "")).replace("sc://", "http://", 1))
    try:
        socket.create_connection((url.hostname, url.port), timeout=0.5).close()
    except (OSError, TypeError, ValueError):
        return None
    return str(state["url"])


def connect(url: str):
    """A Spark Connect session on the server at `url`."""
    from pyspark.sql import SparkSession

    quiet_query_loggers()
    return SparkSession.builder.remote(url).getOrCreate()


def session(cfg: Config):
    """The warm session when `serve` runs for this warehouse, else a session of this process's own
    (notebooks use this: their queries then start at once)."""
    from distill.spark import get_spark

    url = find(cfg)
    return connect(url) if url is not None else get_spark(cfg)


def is_remote(spark) -> bool:
    """True for a Spark Connect session (no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")
