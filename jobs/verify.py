"""verify: score rows offline with the pipeline's verifiers, without Spark.

    distill verify --input rows.jsonl --output results.jsonl

A row is a normalized query row plus "response"; each output line is the verify result of the input
line at the same position: {"id", "score", "passed", "status", "verifier", "verifier_version", "detail"}.
A malformed line still gets its result line (status parse_error, detail.reason saying what is wrong,
id null when none could be read), so the output always has one line per input line.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from distill.records import parse_line
from distill.verifiers import Verifiers
from distill.verifiers.base import PARSE_ERROR, VerifyResult

HELP = "verify rows offline (no Spark): --input rows.jsonl --output results.jsonl"
SPARK = False
RECORD = False
BATCH = 256  # rows per verify call: bounded memory, and the math pool and sandboxes stay busy


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="JSONL: normalized query rows, each with a 'response'")
    parser.add_argument("--output", required=True, help="JSONL results, one per input line ('-' for stdout)")
    parser.add_argument("--workers", type=int, default=0, help="processes for math / sandboxes (0 = all cores)")


def _row(raw: bytes) -> tuple[dict | None, VerifyResult | None, str | None]:
    """(verify row, None, id) or (None, a parse_error result, id if one could be read)."""
    record, row_id = None, None
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        pass
    if isinstance(record, dict):
        row_id = record.get("id") if isinstance(record.get("id"), str) else None
        response = record.pop("response", None)
        parsed = parse_line(json.dumps(record).encode(), "verify", len(raw) + 1024)
        if parsed.row is not None and isinstance(response, str):
            return {**parsed.row, "response": response}, None, row_id or parsed.row["query_id"]
        reason = parsed.reason or ("missing_response" if response is None else "invalid_response")
        detail = parsed.detail or "'response' must be a string"
    else:
        parsed = parse_line(raw, "verify", len(raw) + 1)
        reason, detail = parsed.reason or "not_an_object", parsed.detail or "a line must hold one JSON object"
    return None, VerifyResult(0.0, PARSE_ERROR, "none", "0", {"reason": reason, "error": detail}), row_id


def verify_file(cfg, src, dst, workers: int = 0) -> Counter:
    verifiers = Verifiers(cfg.verify, workers=workers or None)
    counts: Counter = Counter()
    pending: list[tuple[dict | None, VerifyResult | None, str | None]] = []

    def flush():
        rows = [row for row, _, _ in pending if row is not None]
        results = iter(verifiers.verify_rows(rows))
        for row, bad, row_id in pending:
            result = bad if row is None else next(results)
            counts[result.status] += 1
            dst.write(json.dumps(result.to_dict(row_id), ensure_ascii=False) + "\n")
        pending.clear()

    for raw in src:
        raw = raw.rstrip(b"\r\n")  # a blank line is a (malformed) row too: output lines stay aligned
        pending.append(_row(raw))
        if len(pending) >= BATCH:
            flush()
    flush()
    return counts


def run(spark, cfg, args, rec) -> None:
    start = time.perf_counter()
    try:
        src = open(args.input, "rb")
    except OSError as err:
        raise SystemExit(f"verify: cannot read --input {args.input!r}: {err.strerror}") from None
    with src, (sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")) as dst:
        counts = verify_file(cfg, src, dst, args.workers)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"distill: verified {sum(counts.values())} rows in {time.perf_counter() - start:.1f} s ({summary})",
          file=sys.stderr)
