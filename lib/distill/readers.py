"""Read input files line by line (JSONL) or row by row (Parquet), in plain Python.

Lines are read as bytes so that invalid UTF-8 is seen and reported rather than silently replaced,
and are numbered (1-based) so every quarantined line can be found in its file. A file is read by
one task; a corpus is many files, and each file becomes one Spark partition.
Local paths and file: URIs are read directly; other schemes (s3://, hdfs://...) go through fsspec,
which needs that filesystem's fsspec package on the workers.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from typing import Any

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def _is_uri(path: str) -> bool:
    return "://" in path


def list_files(path: str) -> list[str]:
    """A file, a directory (its data files, recursively), or a glob -> sorted file list."""
    if _is_uri(path) and not path.startswith("file://"):
        import fsspec

        fs, _, paths = fsspec.get_fs_token_paths(path)
        found = []
        for p in paths:
            found += [f for f in fs.find(p)] if fs.isdir(p) else [p]
        protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        return sorted(f if "://" in f else f"{protocol}://{f}" for f in found if _is_data_file(f))
    local = path.removeprefix("file://")
    if os.path.isdir(local):
        return sorted(
            os.path.join(d, f) for d, _, files in os.walk(local) for f in files if _is_data_file(f)
        )
    if os.path.isfile(local):
        return [os.path.abspath(local)]
    return sorted(os.path.abspath(p) for p in glob.glob(local, recursive=True) if os.path.isfile(p))


def file_fingerprint(path: str) -> str:
    """What says a listed file is the one read before: its size and modification time (an object store's
    ETag where it gives one). Cheap: no byte of the file is read."""
    if _is_uri(path) and not path.startswith("file://"):
        import fsspec

        fs, _, (found,) = fsspec.get_fs_token_paths(path)
        info = fs.info(found)
        stamp = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created")
                      if info.get(k) is not None), "")
        return f"{info.get('size')}:{stamp}"
    st = os.stat(path.removeprefix("file://"))
    return f"{st.st_size}:{st.st_mtime_ns}"


def _is_data_file(name: str) -> bool:
    base = os.path.basename(name)
    return not base.startswith((".", "_")) and base.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)


def detect_format(path: str, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    return "parquet" if path.endswith(PARQUET_SUFFIXES) else "jsonl"


def _open(path: str):
    if _is_uri(path) and not path.startswith("file://"):
        import fsspec

        return fsspec.open(path, "rb", compression="infer").open()
    local = path.removeprefix("file://")
    if local.endswith(".gz"):
        import gzip

        return gzip.open(local, "rb")
    return open(local, "rb")


def iter_jsonl(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without the line break). A final empty line is not a line."""
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            yield number, raw


def iter_parquet(path: str, batch_rows: int = 1024) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row as plain Python values)."""
    import pyarrow.parquet as pq

    with _open(path) as f:
        number = 0
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
            for row in batch.to_pylist():
                number += 1
                yield number, row


def iter_parquet_batches(path: str, batch_rows: int):
    """pyarrow RecordBatches of at most `batch_rows` rows from a Parquet file or a folder of them
    (as Spark writes), one at a time: memory stays at one batch."""
    import pyarrow.parquet as pq

    for f in list_files(path):
        with _open(f) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows)


def _is_datasets_folder(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, f)) for f in ("dataset_info.json", "dataset_dict.json", "state.json"))


def iter_records(path: str, fmt: str = "auto") -> Iterator[dict[str, Any]]:
    """Records (dicts) of a JSONL/Parquet file, folder or glob, or of a `datasets` save_to_disk folder.
    Small inputs read on one machine (benchmarks, replayed responses); a bad line raises ValueError."""
    if _is_datasets_folder(path):
        import datasets

        loaded = datasets.load_from_disk(path)
        splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
        for split in splits:
            yield from split
        return
    files = list_files(path)
    if not files:
        raise FileNotFoundError(f"no .jsonl/.parquet files or datasets folder at {path!r}")
    for f in files:
        if fmt == "auto" and not f.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES):
            raise ValueError(f"{f}: unknown format (expected .jsonl, .json, .parquet or a datasets folder; "
                             "or set format)")
        if detect_format(f, fmt) == "parquet":
            for _, row in iter_parquet(f):
                yield row
        else:
            for number, raw in iter_jsonl(f):
                if raw.strip():
                    try:
                        yield json.loads(raw)
                    except ValueError as err:
                        raise ValueError(f"{f}:{number}: not JSON ({err})") from None
