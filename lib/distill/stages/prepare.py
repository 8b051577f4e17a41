"""Prepare stages: score queries, find benchmark contamination and duplicates, then decide.

Each function is DataFrame -> DataFrame and names its columns; none reads or writes a table.
Scores come first (`with_signals`, the match finders, the duplicate finders); `decide` alone turns
them and the thresholds into `status` and `drop_reason`, so a changed threshold re-decides from
stored scores and cached embeddings.

Drop reasons, in the order they win: `filter:<rule>`, `contaminated:<benchmark>`,
`duplicate_of:<query_id>` (same normalized text), `near_duplicate_of:<query_id>` (MinHash).
Survivors of a duplicate group are chosen deterministically: a query kept by an earlier run first
(re-runs never flip an old decision), then the earliest ingested, then the first in its input file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from distill.config import DedupConfig, EmbedderConfig
from distill.query_filters import QueryFilterConfig

MATCH_SCHEMA = "query_id string, benchmark string, item_id string, method string, similarity double"


# --- scores -----------------------------------------------------------------------------------

def with_signals(queries: DataFrame) -> DataFrame:
    """Input: query_id, messages. Adds: text (what the filters judge), norm_hash, signals map<string,double>."""

    @F.pandas_udf("struct<text:string,norm_hash:string,signals:map<string,double>>")
    def signals_udf(messages: pd.Series) -> pd.DataFrame:
        from distill.query_filters import prompt_text, score_query
        from distill.textsig import text_hash

        texts = [prompt_text([{"role": m["role"], "content": m["content"]} for m in msgs]) for msgs in messages]
        return pd.DataFrame({"text": texts, "norm_hash": [text_hash(t) for t in texts],
                             "signals": [score_query(t) for t in texts]})

    base = queries.drop("text", "norm_hash", "signals")  # recomputed: stored values may be from an older scorer
    return base.withColumn("_s", signals_udf("messages")).select("*", "_s.*").drop("_s")


def exact_text_hash(col):
    """The `embeddings` cache's key: the exact text's SHA-256, 32 hex digits (no normalization: another
    spelling is another embedding)."""
    return F.substring(F.sha2(col, 256), 1, 32)


def with_text(queries: DataFrame) -> DataFrame:
    """Input: messages. Adds text only: for queries judged before, whose scores and norm_hash are stored."""

    @F.pandas_udf("string")
    def text_udf(messages: pd.Series) -> pd.Series:
        from distill.query_filters import prompt_text

        return pd.Series([prompt_text([{"role": m["role"], "content": m["content"]} for m in msgs])
                          for msgs in messages])

    return queries.withColumn("text", text_udf("messages"))


def filter_reasons(df: DataFrame, cfg: QueryFilterConfig) -> DataFrame:
    """Input: category, signals. Adds filter_reason (None = passes). The thresholds are applied here only."""

    @F.pandas_udf("string")
    def decide_udf(signals: pd.Series, category: pd.Series) -> pd.Series:
        from distill.query_filters import decide

        return pd.Series([decide(dict(s), c, cfg) for s, c in zip(signals, category, strict=True)])

    return df.withColumn("filter_reason", decide_udf("signals", "category"))


def embed_texts(texts: DataFrame, spec: EmbedderConfig, threads: int, counter=None) -> DataFrame:
    """Input: text_hash, text. Output: text_hash, vector array<float>. One model per Python worker.
    counter: an optional Spark accumulator that gets the number of texts embedded (RunRecorder.watch)."""
    from pathlib import Path

    from distill.embedder import EmbedderSpec

    # a relative model folder means the driver's working directory; executors run in folders of their own
    path = str(Path(spec.path).resolve()) if Path(spec.path).exists() else spec.path
    es = EmbedderSpec(path, spec.device, spec.pooling, spec.batch_size, spec.max_length,
                      spec.threads or threads)

    @F.pandas_udf("array<float>")
    def embed_udf(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        from distill.embedder import embed

        for batch in batches:
            yield pd.Series(list(embed(es, batch.tolist())))
            if counter is not None:
                counter.add(len(batch))

    return texts.select("text_hash", embed_udf("text").alias("vector"))


def exact_matches(todo: DataFrame, bench: DataFrame) -> DataFrame:
    """todo: query_id, norm_hash; bench: benchmark, item_id, norm_hash -> MATCH_SCHEMA rows."""
    return todo.join(bench, "norm_hash").select(
        "query_id", "benchmark", "item_id", F.lit("exact").alias("method"), F.lit(1.0).alias("similarity"))


def ngram_matches(todo: DataFrame, bench: DataFrame, n: int) -> DataFrame:
    """todo: query_id, text; bench: benchmark, item_id, text -> matches sharing any word n-gram.
    similarity = the share of the query's n-grams found in that benchmark item."""

    @F.pandas_udf("array<long>")
    def grams_udf(texts: pd.Series) -> pd.Series:
        from distill.textsig import ngram_hashes

        return pd.Series([ngram_hashes(t, n) for t in texts])

    q = todo.select("query_id", grams_udf("text").alias("grams")).withColumn("n_grams", F.size("grams"))
    q = q.select("query_id", "n_grams", F.explode("grams").alias("g"))
    b = bench.select("benchmark", "item_id", F.explode(grams_udf("text")).alias("g"))
    return (
        q.join(b, "g")
        .groupBy("query_id", "benchmark", "item_id", "n_grams")
        .agg(F.count("*").alias("shared"))
        .select("query_id", "benchmark", "item_id", F.lit(f"ngram{n}").alias("method"),
                (F.col("shared") / F.col("n_grams")).alias("similarity"))
    )


def semantic_matches(todo_vectors: DataFrame, bench_path: str, threshold: float, block_rows: int) -> DataFrame:
    """todo_vectors: query_id, vector. bench_path: Parquet of (benchmark, item_id, vector).
    Cosine >= threshold (vectors are unit length). Each task holds one Arrow batch of queries and one
    block of benchmark vectors at a time, so memory is bounded by batch x block, whatever either side's size."""

    def compare(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np

        from distill.readers import iter_parquet_batches

        for pdf in batches:
            if pdf.empty:
                continue
            q = np.stack(pdf["vector"].to_numpy()).astype(np.float32)
            for block in iter_parquet_batches(bench_path, block_rows):
                b = np.stack(block["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
                sims = q @ b.T
                qi, bi = np.nonzero(sims >= threshold)
                if len(qi):
                    yield pd.DataFrame({
                        "query_id": pdf["query_id"].to_numpy()[qi],
                        "benchmark": np.asarray(block["benchmark"].to_pylist(), dtype=object)[bi],
                        "item_id": np.asarray(block["item_id"].to_pylist(), dtype=object)[bi],
                        "method": "semantic",
                        "similarity": sims[qi, bi].astype(np.float64),
                    })

    return todo_vectors.mapInPandas(compare, MATCH_SCHEMA)


def survivor_order(df: DataFrame) -> DataFrame:
    """Adds `order_key`, a string that sorts candidates into survivor order: settled (kept by an earlier
    run) first, then ingest time, input file, line, and query_id to break the last ties.
    Input: query_id, settled, ingested_at, source_file, source_line."""
    key = F.concat_ws(
        "\x1f", F.when(F.col("settled"), "0").otherwise("1"), F.date_format("ingested_at", "yyyyMMddHHmmssSSSSSS"),
        F.coalesce("source_file", F.lit("")), F.lpad(F.coalesce("source_line", F.lit(0)).cast("string"), 12, "0"),
        "query_id")
    return df.withColumn("order_key", key)


def exact_duplicates(candidates: DataFrame) -> DataFrame:
    """candidates: query_id, norm_hash, order_key -> query_id, duplicate_of for every candidate that is not
    its group's survivor."""
    w = Window.partitionBy("norm_hash").orderBy("order_key")
    ranked = candidates.withColumn("first", F.first("query_id").over(w)).withColumn("rank", F.row_number().over(w))
    return ranked.filter("rank > 1").select("query_id", F.col("first").alias("duplicate_of"))


def near_duplicates(todo: DataFrame, candidates: DataFrame, cfg: DedupConfig) -> DataFrame:
    """MinHash LSH over word shingles. todo, candidates: query_id, text, order_key.
    Output: query_id (of todo), near_duplicate_of: the first-ordered candidate within the threshold that
    comes before it. A chain a~b~c drops b and c even when c is not near a: greedy, like most
    production near-dedup."""
    from pyspark.ml.feature import HashingTF, MinHashLSH

    @F.pandas_udf("array<string>")
    def shingle_udf(texts: pd.Series) -> pd.Series:
        from distill.textsig import shingles

        return pd.Series([shingles(t, cfg.shingle_words) for t in texts])

    tf = HashingTF(inputCol="sh", outputCol="features", numFeatures=1 << 22, binary=True)

    def featurize(df):
        df = df.withColumn("sh", shingle_udf("text")).filter(F.size("sh") > 0)
        return tf.transform(df).select("query_id", "order_key", "features")

    cand, mine = featurize(candidates), featurize(todo)
    model = MinHashLSH(inputCol="features", outputCol="hashes", numHashTables=cfg.num_hashes, seed=17).fit(cand)
    pairs = model.approxSimilarityJoin(mine, cand, 1.0 - cfg.near_threshold, distCol="distance").select(
        F.col("datasetA.query_id").alias("query_id"), F.col("datasetA.order_key").alias("a_key"),
        F.col("datasetB.query_id").alias("other"), F.col("datasetB.order_key").alias("b_key"),
    )
    w = Window.partitionBy("query_id").orderBy("b_key")
    return (
        pairs.filter(F.col("b_key") < F.col("a_key"))  # only an earlier query can make this one a duplicate
        .withColumn("rank", F.row_number().over(w))
        .filter("rank = 1")
        .select("query_id", F.col("other").alias("near_duplicate_of"))
    )


# --- decision ---------------------------------------------------------------------------------

def decide(todo: DataFrame, matches: DataFrame, dups: DataFrame, near: DataFrame) -> DataFrame:
    """todo: query_id, filter_reason; matches: MATCH_SCHEMA; dups: query_id, duplicate_of;
    near: query_id, near_duplicate_of. Output: todo + status, drop_reason."""
    contaminated = matches.groupBy("query_id").agg(F.min("benchmark").alias("benchmark"))
    out = todo.join(contaminated, "query_id", "left").join(dups, "query_id", "left").join(near, "query_id", "left")
    reason = F.coalesce(
        F.col("filter_reason"),
        F.concat(F.lit("contaminated:"), F.col("benchmark")),
        F.concat(F.lit("duplicate_of:"), F.col("duplicate_of")),
        F.concat(F.lit("near_duplicate_of:"), F.col("near_duplicate_of")),
    )
    return (
        out.withColumn("drop_reason", reason)
        .withColumn("status", F.when(F.col("drop_reason").isNull(), "kept").otherwise("dropped"))
        .drop("benchmark", "duplicate_of", "near_duplicate_of")
    )
