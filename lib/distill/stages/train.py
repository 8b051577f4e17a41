"""Spark side of the `train` job: the curated rows to train on, tokenized and packed in parallel.

Each partition is tokenized with the student's chat template and packed on its own (best-fit decreasing,
distill.training.packing), with the tokenizer loaded once per Python worker. Rows are hash-partitioned and
sorted by key first, so the same input always packs into the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

PACKER_VERSION = "1"

# One packed row per record; a partition's samples that do not fit in max_len come back in one extra record
# with no tokens, listing their keys in `too_long`.
PACKED = ("input_ids array<int>, labels array<int>, seq_lens array<int>, keys array<string>, loss_tokens long, "
          "too_long array<string>")


def training_rows(sft: DataFrame, teachers: list[str]) -> DataFrame:
    """The kept rows of the chosen teachers: query_id, teacher, messages, response."""
    return sft.where(F.col("keep") & F.col("teacher").isin(teachers)).select(
        "query_id", "teacher", "messages", "response")


def content_key(rows: DataFrame) -> tuple[int, str]:
    """A fingerprint of the rows' content, independent of their order and of the `sft` version they come from
    (a re-run of score and curate that changes nothing moves the version, not the data): the row count and
    two sums of 32-bit halves of each row's 64-bit hash (no overflow below 2^31 rows). Returns (rows, key)."""
    h = F.xxhash64("query_id", "teacher", "messages", "response")
    r = rows.agg(F.count("*").alias("n"), F.sum(h.bitwiseAND(F.lit(0xFFFFFFFF))).alias("lo"),
                 F.sum(F.shiftrightunsigned(h, 32)).alias("hi")).first()
    return r["n"], f"{r['n']}:{r['lo'] or 0}:{r['hi'] or 0}"


def pack_rows(rows: DataFrame, tokenizer_path: str, max_len: int, partitions: int) -> DataFrame:
    """rows: query_id, teacher, messages, response -> PACKED records."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from distill.tokenizers import cached_tokenizer
        from distill.training.packing import packed_rows, tokenize

        frames = [b for b in batches if not b.empty]  # packing needs the whole partition
        if not frames:
            return
        pdf = pd.concat(frames, ignore_index=True)
        tok = cached_tokenizer(tokenizer_path)
        samples = [tokenize(tok, [{"role": m["role"], "content": m["content"]} for m in msgs], resp)
                   for msgs, resp in zip(pdf["messages"], pdf["response"], strict=True)]
        keys = [f"{q}/{t}" for q, t in zip(pdf["query_id"], pdf["teacher"], strict=True)]
        packed, too_long = packed_rows(samples, keys, max_len)
        out = pd.DataFrame(packed, columns=["input_ids", "labels", "seq_lens", "keys", "loss_tokens"])
        out["too_long"] = [[] for _ in range(len(out))]
        if too_long:
            out.loc[len(out)] = [[], [], [], [], 0, too_long]
        yield out

    return (rows.repartition(partitions, "query_id", "teacher").sortWithinPartitions("query_id", "teacher")
            .mapInPandas(run, PACKED))
