"""Score stages: choose each (query, teacher) pair's response for `sft`, score it, and count n-grams across a
teacher's responses. DataFrame -> DataFrame; the score job reads and writes the tables.

Per-response scores (structure, repetition, student-token count, perplexity) run inside `mapInPandas`: each
Python worker loads the reference model and tokenizer once and keeps them in this module's cache, never on
the driver. The corpus n-gram count is plain Spark over hashed n-grams.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from distill.config import PerplexityConfig
from distill.ids import stable_id
from distill.scorers import ngrams, perplexity, structure
from distill.stages.generate import plain

SCORED = (
    "query_id string, teacher string, attempt int, n_tokens int, ppl double, ppl_tokens int, ppl_truncated boolean, "
    "ppl_error string, structure_ok boolean, structure_reason string, ngram_max_repeat int, "
    "ngram_repeat_fraction double"
)
SCORE_COLUMNS = tuple(c.split()[0] for c in SCORED.split(", ")[3:])
# Rows per scorer call inside a task: bounds a task's memory whatever size Arrow batches have.
CHUNK_ROWS = 256


# --- which response of a pair goes to sft -------------------------------------------------------------

def conversation(system_prompt: Column, messages: Column) -> Column:
    """Spark form of distill.stages.generate.conversation: the teacher's system prompt first, merged into a
    query's own system message when it has one. Kept equal to it by tests."""
    first = F.element_at(messages, 1)
    merged = F.struct(F.lit("system").alias("role"),
                      F.concat(system_prompt, F.lit("\n\n"), first["content"]).alias("content"))
    alone = F.struct(F.lit("system").alias("role"), system_prompt.alias("content"))
    rest = F.slice(messages, 2, F.greatest(F.size(messages) - 1, F.lit(0)))
    return (F.when(F.coalesce(system_prompt, F.lit("")) == "", messages)
            .when(first["role"] == "system", F.concat(F.array(merged), rest))
            .otherwise(F.concat(F.array(alone), messages)))


def candidates(attempts: DataFrame, queries: DataFrame, accept: Column | None = None) -> DataFrame:
    """The first accepted attempt of every (query, teacher) pair, with the conversation the teacher saw.
    attempts: the ledger; queries: query_id, source, messages. accept: which attempts count (an experiment's
    threshold, stages.generate.accepted_at); None: the ledger's `accepted`."""
    accepted = attempts.where(F.col("accepted") if accept is None else accept)
    first = accepted.groupBy("query_id", "teacher").agg(F.min("attempt").alias("attempt"))
    return (accepted.join(first, ["query_id", "teacher", "attempt"])
            .join(queries.select("query_id", "source", F.col("messages").alias("query_messages")), "query_id")
            .select("query_id", "teacher", "attempt", "category", "source",
                    conversation(F.col("system_prompt"), F.col("query_messages")).alias("messages"),
                    "response", "finish_reason", "tokens_out", "verify_score", "verify_status"))


# --- per-response scores --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScoreSpec:
    """What a task needs to score: the perplexity settings (None: no perplexity), the tokenizer that counts
    n_tokens (None: not counted), the n-gram length, and torch threads per task."""

    perplexity: dict | None
    tokenizer: str | None
    ngram_n: int
    threads: int = 1

    def key(self) -> str:
        """Changes exactly when stored scores would: model, engine, dtype, window, tokenizer, n, scorer code."""
        p = self.perplexity or {}
        return stable_id(json.dumps([p.get("model"), p.get("engine"), p.get("dtype"), p.get("max_tokens"),
                                     self.tokenizer, self.ngram_n, perplexity.VERSION, ngrams.VERSION,
                                     structure.VERSION]))[:16]


_models: dict[str, tuple] = {}  # one (scorer, tokenizer) per Python worker, kept between tasks


def _load(spec: ScoreSpec):
    key = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    if key not in _models:
        if _models:
            from distill.worker_daemon import model_dropped

            _models.clear()  # at most one reference model per worker
            model_dropped()
        scorer = None
        if spec.perplexity is not None:
            from distill.config import build_section
            from distill.engines import pin_task_gpus

            pin_task_gpus()  # the GPUs Spark gave this task, as for in-process teachers

            p = build_section(PerplexityConfig, spec.perplexity, "score.perplexity")
            if p.engine == "vllm":
                scorer = perplexity.VllmScorer(p.model, p.engine_args, p.max_tokens, token_budget=p.token_budget,
                                               batch_size=p.batch_size)
            else:
                import torch

                torch.set_num_threads(p.threads or spec.threads)
                scorer = perplexity.TransformersScorer(p.model, p.device, p.dtype, p.batch_size, p.max_tokens)
        tokenizer = None
        if spec.tokenizer is not None:
            if scorer is not None and spec.tokenizer == spec.perplexity["model"]:
                tokenizer = scorer.tokenizer
            else:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer)
        _models[key] = (scorer, tokenizer)
    return _models[key]


def score_chunk(spec: ScoreSpec, scorer, tokenizer, pdf: pd.DataFrame) -> pd.DataFrame:
    """SCORED columns for rows with query_id, teacher, attempt, messages, response, finish_reason."""
    responses = [r or "" for r in pdf["response"]]
    shapes = [structure.structure(r, f) for r, f in zip(responses, pdf["finish_reason"], strict=True)]
    loops = [ngrams.repetition(r, spec.ngram_n) for r in responses]
    if tokenizer is not None:
        counts = [len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"]]
    else:
        counts = [None] * len(pdf)
    if scorer is not None:
        ppls = scorer.score([(plain(m), r) for m, r in zip(pdf["messages"], responses, strict=True)])
    else:
        ppls = [perplexity.failed("no_model")] * len(pdf)

    def number(x: float):
        return None if x is None or math.isnan(x) else float(x)

    return pd.DataFrame({
        "query_id": pdf["query_id"].values, "teacher": pdf["teacher"].values,
        "attempt": pd.array(pdf["attempt"], dtype="Int32"),
        "n_tokens": pd.array(counts, dtype="Int32"),
        "ppl": [number(p.ppl) for p in ppls],
        "ppl_tokens": pd.array([p.n_response_tokens if p.error is None else None for p in ppls], dtype="Int32"),
        "ppl_truncated": [p.truncated for p in ppls], "ppl_error": [p.error for p in ppls],
        "structure_ok": [s.ok for s in shapes], "structure_reason": [s.reason for s in shapes],
        "ngram_max_repeat": pd.array([r.max_repeat for r in loops], dtype="Int32"),
        "ngram_repeat_fraction": [float(r.repeated_fraction) for r in loops],
    })


def score_rows(rows: DataFrame, spec: ScoreSpec, partitions: int, counter=None) -> DataFrame:
    """rows: query_id, teacher, attempt, messages, response, finish_reason -> SCORED rows. counter: an optional Spark
    accumulator that gets the number of rows scored (RunRecorder.watch)."""
    spec_json = json.dumps(dataclasses.asdict(spec))

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        s = ScoreSpec(**json.loads(spec_json))
        for pdf in batches:
            if pdf.empty:
                continue
            scorer, tokenizer = _load(s)  # here, not above: a task with nothing to do must not load a model
            for start in range(0, len(pdf), CHUNK_ROWS):
                chunk = pdf.iloc[start : start + CHUNK_ROWS]
                yield score_chunk(s, scorer, tokenizer, chunk)
                if counter is not None:
                    counter.add(len(chunk))

    cols = rows.select("query_id", "teacher", "attempt", "messages", "response", "finish_reason")
    if partitions > 0:
        cols = cols.repartition(partitions, "query_id")
    return cols.mapInPandas(run, SCORED)


# --- n-grams across one teacher's responses ----------------------------------------------------------------

def _hashes(rows: DataFrame, n: int) -> DataFrame:
    """teacher, query_id, h: one row per distinct n-gram hash of each response. One Arrow batch out per batch
    in: a frame per response would cost more than the hashing."""
    import numpy as np

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for big in batches:
            for start in range(0, len(big), CHUNK_ROWS):  # ~1k hashes per response: bound the frame
                pdf = big.iloc[start : start + CHUNK_ROWS]
                per = [np.unique(np.array(ngrams.ngram_hashes(ngrams.tokens(r), n), dtype=np.int64))
                       for r in pdf["response"]]
                sizes = [len(h) for h in per]
                if sum(sizes):
                    yield pd.DataFrame({"teacher": np.repeat(pdf["teacher"].to_numpy(), sizes),
                                        "query_id": np.repeat(pdf["query_id"].to_numpy(), sizes),
                                        "h": np.concatenate(per)})

    return rows.select("teacher", "query_id", "response").mapInPandas(
        run, "teacher string, query_id string, h long")


# Responses per partition of the n-gram count: ~2.5M hashes of ~1k-token responses. A fixed partition count
# would make each partition's aggregation grow (and spill) with the corpus: time would grow faster than it.
RESPONSES_PER_PARTITION = 2500


def corpus_partitions(n_responses: int, minimum: int) -> int:
    return max(minimum, -(-n_responses // RESPONSES_PER_PARTITION))


def corpus_max(rows: DataFrame, n: int, partitions: int = 0) -> DataFrame:
    """rows: teacher, query_id, response -> teacher, query_id, ngram_corpus_max: the most responses of the
    same teacher that share one n-gram with this one (1: none shared, 0: shorter than n tokens).

    Two passes over the hashes rather than one exploded table kept around: the first counts responses per
    (teacher, hash) and keeps only hashes found in more than one response (few, for natural text); the second
    joins each response's hashes to those. Spark broadcasts the shared set when it is small, so the big side is
    shuffled once (for the count), and memory stays bounded by partition size whatever the corpus size.
    partitions (see corpus_partitions): the count's shuffle partitions; 0 leaves Spark's setting.
    """
    hashes = _hashes(rows, n)
    if partitions:
        hashes = hashes.repartition(partitions, "teacher", "h")  # the count's shuffle, sized to the corpus
    shared = hashes.groupBy("teacher", "h").agg(F.count("*").alias("c")).where(F.col("c") > 1)
    best = _hashes(rows, n).join(shared, ["teacher", "h"]).groupBy("teacher", "query_id").agg(
        F.max("c").alias("shared_max"))

    @F.pandas_udf("boolean")
    def has_ngram(texts: pd.Series) -> pd.Series:
        return texts.map(lambda t: len(ngrams.tokens(t)) >= n)

    return (rows.select("teacher", "query_id", has_ngram("response").alias("has_ngram"))
            .join(best, ["teacher", "query_id"], "left")
            .select("teacher", "query_id", F.coalesce(F.col("shared_max"), F.when(F.col("has_ngram"), 1)
                                                      .otherwise(0)).cast("int").alias("ngram_corpus_max")))


def corpus_keys(sft: DataFrame, n: int) -> DataFrame:
    """teacher, corpus_key: changes when the teacher's set of responses or the n-gram rule changes, so a
    teacher's corpus counts are redone exactly when they could differ."""
    fingerprint = F.sum(F.xxhash64("query_id", "attempt").cast("decimal(38,0)")).cast("string")
    return sft.groupBy("teacher").agg(F.count("*").alias("rows"), fingerprint.alias("fp")).select(
        "teacher", F.substring(F.sha2(F.concat_ws("/", F.lit(str(n)), F.lit(ngrams.VERSION),
                                                  F.col("rows").cast("string"), "fp"), 256), 1, 16)
        .alias("corpus_key"))
