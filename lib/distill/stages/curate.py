"""Curate stage: decide `keep` and `reject_reason` for every scored `sft` row from the thresholds in
`curate:`. Reads score columns only, so a new threshold re-decides without re-scoring anything.

Rules, checked in this order; `reject_reason` names the first that fails:

    structure:<reason>    not a complete <think>/<answer> response (distill.scorers.structure.REASONS)
    too_long              n_tokens (the student's tokenizer; the teacher's tokens_out when not counted)
                          above max_tokens
    repetition            an n-gram occurs more than repeat_max_count times inside the response
    corpus_ngram          an n-gram of the response occurs in more than corpus_max_count of the teacher's
                          responses (template-like redundancy)
    perplexity_unscored   a ceiling applies to this teacher but the response has no perplexity
    perplexity            ppl above the teacher's ceiling

A row whose scores are not all there yet (scored after the last `score` run began) stays undecided:
keep is null.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distill.config import CurateConfig


def _ceiling(c: CurateConfig):
    """The perplexity ceiling of each row's teacher (null: none)."""
    default = F.lit(c.max_perplexity).cast("double")
    if not c.max_perplexity_by_teacher:
        return default
    pairs = [x for name, v in sorted(c.max_perplexity_by_teacher.items()) for x in (F.lit(name), F.lit(v))]
    return F.coalesce(F.element_at(F.create_map(*pairs), F.col("teacher")).cast("double"), default)


def decide(sft: DataFrame, c: CurateConfig) -> DataFrame:
    """sft rows -> the same rows with `decided_keep` and `decided_reason`."""
    ceiling = _ceiling(c)
    rules = []
    if c.require_structure:
        rules.append((~F.col("structure_ok"), F.concat(F.lit("structure:"), F.col("structure_reason"))))
    if c.max_tokens is not None:
        rules.append((F.coalesce("n_tokens", "tokens_out") > c.max_tokens, F.lit("too_long")))
    if c.repeat_max_count is not None:
        rules.append((F.col("ngram_max_repeat") > c.repeat_max_count, F.lit("repetition")))
    if c.corpus_max_count is not None:
        rules.append((F.col("ngram_corpus_max") > c.corpus_max_count, F.lit("corpus_ngram")))
    rules.append((ceiling.isNotNull() & F.col("ppl").isNull(), F.lit("perplexity_unscored")))
    rules.append((F.col("ppl") > ceiling, F.lit("perplexity")))
    reason = F.coalesce(*[F.when(cond, why) for cond, why in rules])
    pending = F.col("score_key").isNull()
    if c.corpus_max_count is not None:
        pending = pending | F.col("ngram_corpus_max").isNull()
    return (sft.withColumn("decided_reason", F.when(~pending, reason))
            .withColumn("decided_keep", F.when(~pending, F.col("decided_reason").isNull())))
