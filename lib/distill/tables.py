"""The project's Delta tables: names, schemas, keys, and the two ways jobs write them.

Every table lives at `<warehouse>/<name>` and is registered under its bare name in the session
catalog, so users query `queries`, `runs`, ... with SQL. Jobs write only through `merge_new`
(insert rows whose key is not there yet: re-runs and retried tasks cannot duplicate; `append_new` where
the key is new by construction),
`merge_update` (set re-decided columns, such as a query's status, by key), `merge_replace` and
`merge_mirror` (keep a derived table's keys equal to its source's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from distill.config import Config
from distill.spark import exists, read_text, resolve_path

MESSAGES = "array<struct<role:string,content:string>>"
TEST_CASES = "struct<language:string,tests:array<struct<type:string,input:string,output:string,code:string>>>"
CONSTRAINTS = "struct<instruction_id_list:array<string>,kwargs:array<string>>"


@dataclass(frozen=True)
class Table:
    name: str
    keys: tuple[str, ...]  # declared NOT NULL in `ddl`: Delta rejects a write with a null key
    ddl: str  # the schema, as Spark DDL
    comment: str
    checks: dict[str, str] = field(default_factory=dict)  # CHECK constraints: name -> SQL condition
    change_feed: bool = True  # Delta's change data feed: readers can ask what changed between versions


def _unit(*columns: str) -> dict[str, str]:
    """CHECK constraints keeping score-like columns in [0, 1] (null allowed: not scored yet)."""
    return {f"{c}_range": f"{c} IS NULL OR ({c} >= 0 AND {c} <= 1)" for c in columns}


def _non_negative(*columns: str) -> dict[str, str]:
    return {f"{c}_non_negative": f"{c} IS NULL OR {c} >= 0" for c in columns}


TABLES = {
    t.name: t
    for t in [
        Table(
            "queries",
            ("query_id",),
            "query_id string not null, source string not null, source_id string, category string not null, "
            f"messages {MESSAGES} not null, reference_answer string, test_cases {TEST_CASES}, "
            f"constraints {CONSTRAINTS}, content_hash string not null, metadata string, "
            "status string not null, drop_reason string, source_file string, source_line long, "
            "ingest_run_id string not null, ingested_at timestamp not null, "
            "norm_hash string, signals map<string,double>, prepare_key string, prepared_at timestamp",
            "One row per distinct query. status: new (ingested) -> kept | dropped (by prepare, with drop_reason); "
            "signals are the filter scores, prepare_key the prepare config that judged it.",
            checks={"status_known": "status IN ('new', 'kept', 'dropped')",
                    "dropped_has_reason": "status <> 'dropped' OR drop_reason IS NOT NULL"},
        ),
        Table(
            "quarantine",
            ("quarantine_id",),
            "quarantine_id string not null, source string not null, source_file string not null, "
            "line long not null, reason string not null, detail string, raw string, raw_bytes long not null, "
            "raw_truncated boolean not null, run_id string not null, quarantined_at timestamp not null",
            "Input that could not become a query, with the reason. line is 1-based (a row index for Parquet).",
        ),
        Table(
            "ingest_files",
            ("source_file", "fingerprint", "parse_key"),
            "source_file string not null, fingerprint string not null, parse_key string not null, "
            "source string not null, lines long not null, run_id string not null, ingested_at timestamp not null",
            "Input files ingest has read whole: a file listed again with the same fingerprint (size and "
            "modification time) and parse settings (parse_key) is not read again (`ingest --all` reads every "
            "file). lines: the file's lines (rows for Parquet).",
        ),
        Table(
            "embeddings",
            ("text_hash", "model"),
            "text_hash string not null, model string not null, vector array<float> not null",
            "Embedding cache keyed by exact text and model: changing a threshold never re-embeds.",
        ),
        Table(
            "decontam_matches",
            ("query_id", "benchmark", "item_id", "method"),
            "query_id string not null, benchmark string not null, item_id string not null, method string not null, "
            "similarity double not null, prepare_key string not null",
            "Queries that match a benchmark item: method exact | ngram<N> | semantic, with the similarity.",
        ),
        Table(
            "reference_audit",
            ("query_id",),
            "query_id string not null, source string not null, reference string not null, attempts int not null, "
            "answers int not null, majority_answer string, votes int not null, share double, teachers int not null, "
            "judge_answer string, status string not null, audit_key string not null, run_id string not null, "
            "audited_at timestamp not null, applied_at timestamp",
            "Math references checked against the teachers' answers (prepare, once a query has attempts): the "
            "reference audited, the largest group of equivalent final answers (majority_answer, its votes in "
            "attempts, its share of the attempts with an answer, its distinct teachers), the judge's own answer "
            "when one was asked. status: agrees | no_majority | no_answers | proposed (a clear majority, and the "
            "judge when asked, disagree with the reference) | disputed (the judge does not side with the "
            "majority) | applied (prepare.reference_audit.apply replaced the reference with majority_answer; "
            "`reference` keeps the old one).",
            checks={"status_known": "status IN ('agrees', 'no_majority', 'no_answers', 'proposed', 'disputed', "
                                    "'applied')", **_unit("share")},
        ),
        Table(
            "attempts",
            ("query_id", "teacher", "attempt"),
            "query_id string not null, teacher string not null, attempt int not null, category string not null, "
            "engine string not null, model string not null, seed bigint not null, system_prompt string, "
            "response string not null, finish_reason string, tokens_in int, tokens_out int, gen_seconds double, "
            "run_id string not null, generated_at timestamp not null, "
            "verify_score double, verify_status string, verifier string, verifier_version string, "
            "verify_detail string, verify_seconds double, verified_at timestamp, accepted boolean, "
            "release_verify_score double",
            "The attempts ledger: every teacher response (attempt 1, 2, ... per query and teacher) and its "
            "verification. accepted = verify_status ok and verify_score >= 0.9 (or no_verifier when the config "
            "accepts that). Generation is never repeated for a stored attempt; verification is redone when the "
            "verifier's version changes or it failed for infrastructure reasons. release_verify_score: a replayed "
            "release's own verify score for the response, as the release gives it (replay shape am-release; "
            "null for other teachers), beside ours in report_release.",
            checks={"attempt_positive": "attempt >= 1",
                    "verify_status_known": "verify_status IS NULL OR verify_status IN "
                                           "('ok', 'parse_error', 'timeout', 'infra_error', 'no_verifier')",
                    **_unit("verify_score"), **_non_negative("tokens_in", "tokens_out", "gen_seconds")},
        ),
        Table(
            "sft",
            ("query_id", "teacher"),
            "query_id string not null, teacher string not null, attempt int not null, category string not null, "
            f"source string, messages {MESSAGES} not null, response string not null, finish_reason string, "
            "tokens_out int, verify_score double, verify_status string, run_id string not null, "
            "added_at timestamp not null, "
            "n_tokens int, ppl double, ppl_tokens int, ppl_truncated boolean, ppl_error string, "
            "structure_ok boolean, structure_reason string, ngram_max_repeat int, ngram_repeat_fraction double, "
            "score_key string, scored_at timestamp, ngram_corpus_max int, corpus_key string, "
            "keep boolean, reject_reason string, curate_key string, curated_at timestamp",
            "One row per (query, teacher): the teacher's first accepted attempt, its scores and the curate "
            "decision. messages is the conversation the teacher saw (system prompt included). Scores: n_tokens "
            "(student tokenizer), ppl over the response tokens, structure, ngram_max_repeat (most frequent "
            "n-gram inside the response), ngram_corpus_max (most responses of this teacher sharing one of its "
            "n-grams). keep/reject_reason come from curate's thresholds; keep is null until curated.",
            checks={"attempt_positive": "attempt >= 1", "ppl_positive": "ppl IS NULL OR ppl > 0",
                    **_unit("verify_score", "ngram_repeat_fraction"),
                    **_non_negative("n_tokens", "ppl_tokens", "ngram_max_repeat", "ngram_corpus_max")},
        ),
        Table(
            "attempt_scores",
            ("query_id", "teacher", "attempt"),
            "query_id string not null, teacher string not null, attempt int not null, "
            "n_tokens int, ppl double, ppl_tokens int, ppl_truncated boolean, ppl_error string, "
            "structure_ok boolean, structure_reason string, ngram_max_repeat int, ngram_repeat_fraction double, "
            "score_key string not null, run_id string not null, scored_at timestamp not null",
            "The per-response scores of every attempt ever scored (the `sft` row of a pair or any attempt an "
            "experiment's variant chose), made with score_key's model and scorers. A response is scored once per "
            "score_key whoever needs it: `sft` and the variants copy their scores from here.",
            checks={"attempt_positive": "attempt >= 1", "ppl_positive": "ppl IS NULL OR ppl > 0",
                    **_unit("ngram_repeat_fraction"), **_non_negative("n_tokens", "ppl_tokens", "ngram_max_repeat")},
        ),
        Table(
            "experiments",
            ("experiment", "variant"),
            "experiment string not null, variant string not null, recipe string not null, teachers array<string> "
            "not null, threshold double not null, dataset_key string not null, dataset_rows long not null, "
            "attempts_version long not null, attempt_scores_version long not null, student string not null, "
            "train_key string not null, model_path string not null, run_id string not null",
            "Lineage of every experiment variant: its recipe (JSON: threshold, curate and train settings, "
            "subsample), the dataset it made (dataset_key = the training set's key; its rows are in "
            "experiment_rows), the `attempts` and `attempt_scores` versions it read, and the student trained on it "
            "(students.student, whose eval_results are the variant's scores). Variants with the same dataset and "
            "recipe share a student.",
            checks=_unit("threshold"),
        ),
        Table(
            "experiment_rows",
            ("dataset_key", "query_id", "teacher"),
            "dataset_key string not null, query_id string not null, teacher string not null, attempt int not null, "
            "n_tokens int, ppl double, verify_score double, run_id string not null",
            "The rows of every experiment dataset (by dataset_key, see `experiments`): which attempt of each pair "
            "it holds; JOIN attempts USING (query_id, teacher, attempt) gives the response.",
        ),
        Table(
            "experiment_results",
            ("experiment", "variant", "benchmark"),
            "experiment string not null, variant string not null, benchmark string not null, rows long, "
            "tokens long, mean_length double, length_entropy double, mean_ppl double, student string not null, "
            "pass_at_1 double, pass_at_1_stderr double, mean_tokens double, complete boolean, "
            "run_id string not null",
            "Per experiment variant and benchmark: the dataset's figures (rows, tokens, mean length and length "
            "entropy in the student's tokens, mean perplexity) and the student's scores (eval_results, difficulty "
            "'all'). Trace back: JOIN experiments USING (experiment, variant), then eval_samples ON student and "
            "experiment_rows ON dataset_key.",
            checks=_unit("pass_at_1", "length_entropy"),
        ),
        Table("report_costs", ("teacher", "category"),
              "teacher string not null, category string not null, pairs long, attempts long, accepted long, "
              "acceptance_rate double, attempts_per_accepted double, tokens_out_per_accepted double, "
              "engine_s_per_accepted double, run_id string not null",
              "Per teacher and category (and category 'all'): acceptance and the cost per accepted response.",
              checks=_unit("acceptance_rate")),
        Table("report_lengths", ("teacher", "category"),
              "teacher string not null, category string not null, responses long, kept long, mean_tokens double, "
              "median_tokens double, p90_tokens double, length_cv double, share_lt_1k double, "
              "share_1k_10k double, share_gt_10k double, mean_ppl double, median_ppl double, "
              "length_entropy double, run_id string not null",
              "Per teacher and category: response lengths (student tokenizer), the paper's buckets, length "
              "diversity (normalized entropy of the log2-length histogram) and perplexity.",
              checks=_unit("share_lt_1k", "share_1k_10k", "share_gt_10k", "length_entropy")),
        Table("report_length_hist", ("teacher", "category", "bin"),
              "teacher string not null, category string not null, bin int not null, lo long, hi long, count long, "
              "run_id string not null",
              "Histogram of response lengths: bin b counts lengths in [2^b, 2^(b+1))."),
        Table("report_verify", ("teacher", "category", "score_bin", "status"),
              "teacher string not null, category string not null, score_bin double, status string, count long, "
              "run_id string not null",
              "Verify-score distribution of all attempts, by status."),
        Table("report_audit", ("source",),
              "source string not null, audited long, agrees long, no_majority long, no_answers long, proposed long, "
              "disputed long, revised long, run_id string not null",
              "Per query source: math references audited against the teachers' majority answer, and how many the "
              "audit proposed to revise, found disputed by the judge, or revised (see `reference_audit`)."),
        Table("report_rejects", ("teacher", "category", "reason"),
              "teacher string not null, category string not null, reason string not null, count long, "
              "run_id string not null",
              "Curate's reject reasons (pending: not decided yet)."),
        Table("report_release", ("teacher", "category"),
              "teacher string not null, category string not null, responses long, compared long, "
              "release_passed long, passed long, agreed long, agreement_rate double, release_only long, "
              "ours_only long, mean_release_score double, mean_verify_score double, run_id string not null",
              "Per replayed release (teacher) and category: the responses with the release's own verify score "
              "(attempts.release_verify_score), those we have a verdict for (compared: status ok, or parse_error "
              "as a fail), how many each side passes at generate.threshold, how many verdicts agree and the "
              "agreement rate, the two kinds of disagreement, and both mean scores over the compared ones.",
              checks=_unit("agreement_rate")),
        Table("report_release_disagreements", ("query_id", "teacher", "attempt"),
              "query_id string not null, teacher string not null, attempt int not null, category string not null, "
              "release_verify_score double, verify_score double, verify_status string, verifier string, "
              "release_passed boolean, passed boolean, run_id string not null",
              "The replayed responses whose release verdict differs from ours (release_passed vs passed, at "
              "generate.threshold), at most 100 per teacher and category, the widest score gap first: JOIN "
              "attempts USING (query_id, teacher, attempt) for the response, queries USING (query_id) for the "
              "question and reference."),
        Table("report_adaptive", ("model", "task"),
              "model string not null, task string not null, task_order int, responses long, mean_tokens double, "
              "median_tokens double, run_id string not null",
              "Adaptive length: response lengths per task (model: a student of eval_samples, task "
              "'<benchmark>:<level>' or the benchmark; or an output of report.outputs), tasks in task_order."),
        Table("report_students", ("student", "benchmark"),
              "student string not null, benchmark string not null, pass_at_1 double, pass_at_1_stderr double, "
              "mean_tokens double, complete boolean, teachers array<string>, sft_version long, train_key string, "
              "run_id string not null",
              "The paper's Tables 1 and 2 in long form: eval_results' difficulty 'all' figures per student and "
              "benchmark (not final where complete is false), with the lineage: teachers, sft_version and "
              "train_key from `students` (a replayed or external student: the config's teacher, no keys). From a "
              "score back to its data is one join: eval_results r JOIN students s ON r.student = s.student (a student "
              "evaluated under its train name) gives s.sft_version and s.set_key, the `sft` version and rows it "
              "learned from.",
              checks=_unit("pass_at_1")),
        Table("train_metrics", ("train_key", "step"),
              "train_key string not null, step int not null, epoch int, loss double, lr double, grad_norm double, "
              "tokens long, target_tokens long, seconds double, tokens_per_s double, world int, launcher string, "
              "run_id string not null",
              "One row per optimizer step of each training run (train_key: training set + student + recipe).",
              checks={"step_positive": "step >= 1"}),
        Table(
            "students",
            ("student",),
            "student string not null, teachers array<string> not null, sft_version long, "
            "set_key string not null, train_key string not null, base_model string not null, "
            "model_path string not null, samples long, run_id string not null, trained_at timestamp not null",
            "One row per student `train` or `experiment` made: whose rows (teachers) from which `sft` version (null "
            "for an experiment's variant, whose rows are its own selection: see `experiments`), its training set "
            "and run keys, and where the trained model is. A retrained student's row is replaced.",
        ),
        Table(
            "eval_items",
            ("benchmark", "item_id"),
            "benchmark string not null, item_id string not null, kind string not null, difficulty string, "
            "item_date string, prompt string not null, answer string, tests int, item_hash string not null, "
            "bad_reason string, samples int not null, run_id string not null",
            "The benchmark items evaluate read, as it read them (replaced per benchmark on each run): bad_reason "
            "says why an item is never asked (e.g. test data that is not what its format promises).",
            checks={"samples_positive": "samples >= 1"},
        ),
        Table(
            "eval_samples",
            ("student", "benchmark", "item_id", "sample"),
            "student string not null, benchmark string not null, item_id string not null, sample int not null, "
            "kind string not null, difficulty string, item_hash string not null, gen_key string not null, "
            "engine string not null, model string not null, seed bigint not null, system_prompt string, "
            "response string not null, finish_reason string, tokens_in int, tokens_out int, gen_seconds double, "
            "run_id string not null, generated_at timestamp not null, "
            "score double, status string, verifier string, verifier_version string, verify_detail string, "
            "verify_seconds double, verified_at timestamp, correct boolean",
            "Every sample a student gave on a benchmark item (sample 1..k) and its verification. correct = status "
            "ok and score 1 (a code sample passes all of its tests). gen_key: what made it (model, sampling, "
            "system prompt); samples of another gen_key or item_hash are asked again.",
            checks={"sample_positive": "sample >= 1",
                    "status_known": "status IS NULL OR status IN "
                                    "('ok', 'parse_error', 'timeout', 'infra_error', 'no_verifier')",
                    **_unit("score"), **_non_negative("tokens_in", "tokens_out", "gen_seconds")},
        ),
        Table(
            "eval_results",
            ("student", "benchmark", "difficulty"),
            "student string not null, benchmark string not null, difficulty string not null, "
            "difficulty_order int, items long not null, bad_items long not null, samples_expected int not null, "
            "samples_min int, samples_max int, complete boolean not null, pass_at_1 double, "
            "pass_at_1_stderr double, pass_at_k map<int,double>, maj_at_k double, mean_tokens double, "
            "median_tokens double, mean_tokens_correct double, mean_tokens_wrong double, stop_ratio double, "
            "gen_key string, run_id string not null, evaluated_at timestamp not null",
            "Per student, benchmark and difficulty ('all', and each level the benchmark has): pass@1 (the mean "
            "over all samples) with its standard error across sample indices, unbiased pass@k, maj@k (math), "
            "tokens per sample (mean, median, correct, wrong) and the share not cut by the token limit. "
            "complete is false when an item lacks samples or could not be asked: such figures are not final.",
            checks={**_unit("pass_at_1", "maj_at_k", "stop_ratio")},
        ),
        Table(
            "runs",
            ("run_id",),
            "run_id string not null, job string not null, status string not null, started_at timestamp not null, "
            "finished_at timestamp, duration_s double, config string not null, config_hash string not null, "
            "git_sha string, distill_version string not null, spark_master string, "
            "counts map<string,bigint>, timings map<string,double>, table_versions map<string,bigint>, "
            "error string, settled_key string",
            "One row per job run: the resolved config, code version, counts, timings, and Delta versions written; "
            "settled_key: the state a run left with nothing to do (distill.settled).",
            checks={"status_known": "status IN ('succeeded', 'failed')"},
        ),
    ]
}


def table_path(cfg: Config, name: str) -> str:
    return resolve_path(cfg.warehouse).rstrip("/") + "/" + name


CREATE_WAIT_S = 2.0  # how long read_path gives another process to finish creating a table


def read_table(spark, cfg: Config, name: str):
    """The warehouse's table `name` as a DataFrame (Delta's reader on its path)."""
    return read_path(spark, table_path(cfg, name))


def read_path(spark, path: str):
    """The Delta table at `path` as a DataFrame.

    A table that another process is creating has its log folder before its first commit, and Delta calls it
    missing then ("Delta table ... doesn't exist"; seen once with two generate jobs starting at once on a new
    warehouse). Such a read waits a moment and is tried once more, with this JVM's cached state of the table
    dropped, so that both jobs see the table one of them made."""
    import time

    try:
        return spark.read.format("delta").load(path)
    except Exception as err:  # noqa: BLE001 - AnalysisException [DELTA_TABLE_NOT_FOUND]; anything else is raised
        from distill.serve import is_remote

        if "DELTA_TABLE_NOT_FOUND" not in str(err) or is_remote(spark):
            raise
        time.sleep(CREATE_WAIT_S)
        _forget_cached(spark, path)
        return spark.read.format("delta").load(path)


def _forget_cached(spark, path: str) -> None:
    """Drop this JVM's cached state of the table at `path`, so that the next access lists its log again."""
    jvm = spark._jvm
    jvm.org.apache.spark.sql.delta.DeltaLog.invalidateCache(spark._jsparkSession, jvm.org.apache.hadoop.fs.Path(path))


def ensure_table(spark, cfg: Config, name: str):
    """Create the table if it does not exist, register its name, and return a DeltaTable.

    Once per process and table it is created or checked; later calls only open it (a table removed since,
    as tests do, is made again)."""
    from delta.tables import DeltaTable

    table, path = TABLES[name], table_path(cfg, name)
    if (id(spark), path) in _ensured:
        try:
            return DeltaTable.forPath(spark, path)
        except Exception as err:  # noqa: BLE001 - AnalysisException: no table there any more
            if "DELTA_MISSING_DELTA_TABLE" not in str(err) and "is not a Delta table" not in str(err):
                raise
            _ensured.discard((id(spark), path))
    existed = DeltaTable.isDeltaTable(spark, path)
    if not existed:
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(_schema(spark, table.ddl))
        # Constraints and the change feed are part of the table's first commit, so no writer ever sees the
        # table without them (Delta keeps a CHECK constraint as the property delta.constraints.<name>).
        for key, value in _properties(table).items():
            builder = builder.property(key, value)
        builder = builder.comment(table.comment)

        def create():
            try:
                return builder.execute()
            except Exception:
                _forget_cached(spark, path)  # a retry must see the commit of the job that created it meanwhile
                raise

        # two jobs creating it at once: the later one finds the other's
        _retry_on_conflict(name, create, creating=True)
    _register(spark, name, path)
    target = DeltaTable.forPath(spark, path)
    if existed and _upgrade(spark, table, path):  # one made just now, above, already has what _upgrade adds
        target = DeltaTable.forPath(spark, path)  # columns were added: a DeltaTable opened before is stale
    _ensured.add((id(spark), path))
    return target


# (session, table path) that ensure_table created or checked in this process
_ensured: set[tuple[int, str]] = set()


def _properties(table: Table) -> dict[str, str]:
    props = {f"delta.constraints.{n}": cond for n, cond in table.checks.items()}
    if table.change_feed:
        props["delta.enableChangeDataFeed"] = "true"
    return props


def _upgrade(spark, table: Table, path: str) -> bool:
    """Give a table made by an older version of this code the columns, constraints and properties it lacks (once
    per process: ensure_table's). ADD CONSTRAINT checks the rows already there: a violating row stops the job with
    Delta's error. Returns whether columns were added."""
    # a nullable column the code declares since (attempts.release_verify_score): added, null in the old rows, so
    # writers, which give every declared column (_align), keep working on an old warehouse
    declared, current = _schema(spark, table.ddl), read_path(spark, path).schema
    missing = [f for f in declared.fields if f.nullable and f.name not in current.fieldNames()]
    if missing:
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ("
                  + ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in missing) + ")")
    # SHOW TBLPROPERTIES reads the snapshot forPath just loaded; DESCRIBE DETAIL (target.detail()) would also
    # size the table's files, seconds per table on a cold session
    have = dict(spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect())
    for name, cond in table.checks.items():
        if f"delta.constraints.{name.lower()}" not in have:
            spark.sql(f"ALTER TABLE delta.`{path}` ADD CONSTRAINT {name} CHECK ({cond})")
    if table.change_feed and have.get("delta.enableChangeDataFeed") != "true":
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    # a column that may be null now (students.sft_version: a student of an experiment has none)
    for f in declared.fields:
        if f.nullable and f.name in current.fieldNames() and not current[f.name].nullable:
            spark.sql(f"ALTER TABLE delta.`{path}` ALTER COLUMN {f.name} DROP NOT NULL")
    return bool(missing)


# name -> location registered in this process's session catalog (in-memory: it lives as long as the session)
_registered: dict[tuple[int, str], str] = {}


def _register(spark, name: str, path: str) -> None:
    key = (id(spark), name)
    if _registered.get(key) == path:
        return
    # A session that switched warehouses (tests do) must not keep pointing the name at the old one.
    spark.sql(f"DROP TABLE IF EXISTS {name}")
    spark.sql(f"CREATE TABLE {name} USING DELTA LOCATION '{path}'")
    _registered[key] = path


def rows_by_key(spark, cfg: Config, name: str) -> dict:
    """A small single-key table (e.g. `students`) as {key: row as a dict}; {} when it does not exist yet."""
    from delta.tables import DeltaTable

    path = table_path(cfg, name)
    if not DeltaTable.isDeltaTable(spark, path):
        return {}
    (key,) = TABLES[name].keys
    return {r[key]: r.asDict() for r in read_path(spark, path).collect()}


def versions(spark, cfg: Config, names) -> dict[str, int | None]:
    """Each table's latest Delta version (None: no table yet)."""
    from delta.tables import DeltaTable

    out = {}
    for name in names:
        path = table_path(cfg, name)
        out[name] = current_version(DeltaTable.forPath(spark, path)) if DeltaTable.isDeltaTable(
            spark, path) else None
    return out


def register_tables(spark, cfg: Config) -> list[str]:
    """Make every existing table of the warehouse queryable by its name; return the names."""
    from delta.tables import DeltaTable

    from distill.serve import is_remote

    if is_remote(spark):
        return _register_on_server(spark, cfg)
    found = []
    for name in TABLES:
        path = table_path(cfg, name)
        if DeltaTable.isDeltaTable(spark, path):
            _register(spark, name, path)
            found.append(name)
    return found


def _register_on_server(spark, cfg: Config) -> list[str]:
    """register_tables over Spark Connect (`distill.serve`): the server's catalog is shared by its sessions
    and already holds the tables it found at start; a table made since is added. The warehouse is local
    (only a local one is served), so existence is a look at the folder, not a JVM call."""
    from pathlib import Path

    have = {r.tableName for r in spark.sql("SHOW TABLES").collect()}
    found = []
    for name in TABLES:
        path = table_path(cfg, name)
        if (Path(path) / "_delta_log").is_dir():
            if name not in have:
                spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{path}'")
            found.append(name)
    return found


def _schema(spark, ddl: str):
    from pyspark.sql.types import StructType

    return StructType.fromDDL(ddl)


def _key_condition(keys: tuple[str, ...]) -> str:
    return " AND ".join(f"t.{k} = s.{k}" for k in keys)


# Two jobs writing one table at once (two `generate` runs, any two jobs' `runs` rows): Delta commits
# optimistically, so the one that commits second gets a conflict and has written nothing. Every write here is
# keyed (MERGE by key, or a whole overwrite), so doing it again on top of the other job's commit gives the
# same rows; it is retried a few times, then the job fails with the conflict (exit 1, recorded in `runs`).
# Creating a table is retried the same way: the job that loses sees the other's table and uses it.
CONFLICT_RETRIES = 4
conflict_retries = 0  # writes retried in this process (RunRecorder puts its run's share in runs.counts)


def _retry_on_conflict(name: str, write, creating: bool = False):
    import random
    import sys
    import time

    import delta.exceptions.captured  # noqa: F401 - turns Delta's JVM conflicts into delta.exceptions classes
    from delta import exceptions as dx

    global conflict_retries
    conflicts = (dx.DeltaConcurrentModificationException, dx.ConcurrentWriteException, dx.MetadataChangedException,
                 dx.ProtocolChangedException, dx.ConcurrentAppendException, dx.ConcurrentDeleteReadException,
                 dx.ConcurrentDeleteDeleteException, dx.ConcurrentTransactionException)
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            return write()
        except Exception as err:
            # A table another job is creating right now has its log folder, or files, but no commit yet: Delta
            # calls it missing (seen with two generate jobs starting at once on a new warehouse), or its location
            # not empty.
            being_made = creating and any(code in str(err) for code in (
                "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION", "DELTA_TABLE_NOT_FOUND"))
            if not (isinstance(err, conflicts) or being_made):
                raise
            why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            if attempt == CONFLICT_RETRIES:
                raise RuntimeError(f"writing `{name}`: another job committed to it first {attempt + 1} times in a "
                                   f"row; giving up (re-run the job: it is safe). Last conflict: {why}") from None
            conflict_retries += 1
            print(f"distill: writing `{name}`: another job committed to it first ({why}); retrying "
                  f"({attempt + 1} of {CONFLICT_RETRIES})", file=sys.stderr, flush=True)
            time.sleep(random.uniform(0.5, 2.0) * (attempt + 1))  # jittered: two identical runs must not collide again


def merge_new(spark, cfg: Config, name: str, df) -> dict:
    """Insert the rows of `df` whose key is not in the table yet. Returns Delta's operation metrics."""
    target = ensure_table(spark, cfg, name)
    keys = TABLES[name].keys
    df = _align(df, _schema(spark, TABLES[name].ddl))
    _retry_on_conflict(name, lambda: target.alias("t").merge(df.alias("s"), _key_condition(keys))
                       .whenNotMatchedInsertAll().execute())
    return last_operation(target)


def append_new(spark, cfg: Config, name: str, df) -> None:
    """Append rows whose key is new by construction (a `runs` row's fresh run_id): one commit, like
    merge_new, without its scan of the rows already there (`runs` gains a file with every job run)."""
    ensure_table(spark, cfg, name)
    _align(df, _schema(spark, TABLES[name].ddl)).write.format("delta").mode("append").save(table_path(cfg, name))


def _align(df, schema):
    """`df` with the table's columns in order; columns a writer does not own (filled by a later job) are null."""
    from pyspark.sql import functions as F

    unknown = set(df.columns) - set(schema.fieldNames())
    if unknown:
        raise ValueError(f"columns {sorted(unknown)} are not in the table schema")
    return df.select([F.col(f.name) if f.name in df.columns else F.lit(None).cast(f.dataType).alias(f.name)
                      for f in schema.fields])


def merge_update(spark, cfg: Config, name: str, df, columns: list[str]) -> dict:
    """Set `columns` of existing rows from `df` (matched by key); rows not in the table are ignored."""
    target = ensure_table(spark, cfg, name)
    keys = TABLES[name].keys
    _retry_on_conflict(name, lambda: target.alias("t").merge(df.alias("s"), _key_condition(keys)).whenMatchedUpdate(
        set={c: f"s.{c}" for c in columns}).execute())
    return last_operation(target)


def merge_replace(spark, cfg: Config, name: str, df, scope_column: str, scope,
                  ignore: tuple[str, ...] | None = None) -> dict:
    """Replace every row whose `scope_column` is in `scope` (a one-column DataFrame) with the rows of `df`:
    delete the scope's old rows, insert the new. Re-running after a crash between the two repeats both.
    With `ignore` (columns such as a run id): nothing is written when the scope already holds exactly `df`'s
    rows but for those columns (a re-run), as merge_upsert."""
    target = ensure_table(spark, cfg, name)
    if ignore is not None:
        keys = list(TABLES[name].keys)
        df = _align(df, _schema(spark, TABLES[name].ddl))
        old = target.toDF().join(scope, scope_column, "left_semi")
        if _new_or_changed(df, old, keys, ignore).isEmpty() and old.join(df.select(*keys), keys,
                                                                          "left_anti").isEmpty():
            return {"version": current_version(target)}  # no operation, no metrics
    _retry_on_conflict(name, lambda: target.alias("t").merge(scope.alias("s"), f"t.{scope_column} = s.{scope_column}")
                       .whenMatchedDelete().execute())
    return merge_new(spark, cfg, name, df)


def merge_mirror(spark, cfg: Config, name: str, df, changed: str) -> dict:
    """Make the table's keys exactly those of `df`: insert new keys, delete keys `df` lacks, and rewrite a
    matched row whole (columns `df` lacks become null) where the SQL condition `changed` (over t. and s.)
    holds. Rows that did not change keep every column, including those later jobs filled."""
    from pyspark.sql import functions as F

    target = ensure_table(spark, cfg, name)
    table = TABLES[name]
    df = _align(df, _schema(spark, table.ddl))
    # Nothing to insert, delete or rewrite (a re-run): no MERGE, whose delete clause would rewrite every file
    # and move the table's version for nothing (what reads the table would see a change that is none).
    rows = target.toDF()
    same = F.expr(f"{_key_condition(table.keys)} AND NOT ({changed})")
    if (df.alias("s").join(rows.alias("t"), same, "left_anti").isEmpty()
            and rows.alias("t").join(df.alias("s"), F.expr(_key_condition(table.keys)), "left_anti").isEmpty()):
        return {"version": current_version(target)}  # no operation, no metrics
    _retry_on_conflict(name, lambda: target.alias("t").merge(df.alias("s"), _key_condition(table.keys))
                       .whenMatchedUpdateAll(condition=changed).whenNotMatchedInsertAll()
                       .whenNotMatchedBySourceDelete().execute())
    return last_operation(target)


def merge_upsert(spark, cfg: Config, name: str, df, ignore: tuple[str, ...] | None = None) -> dict:
    """Insert new keys and rewrite matched rows whole with `df`'s values. With `ignore` (columns such as a
    run id), only rows that are new or differ in another column are written, and nothing when none does: the
    table's version then moves only for a real change."""
    target = ensure_table(spark, cfg, name)
    df = _align(df, _schema(spark, TABLES[name].ddl))
    if ignore is not None:
        df = _new_or_changed(df, target.toDF(), TABLES[name].keys, ignore).cache()
        if df.isEmpty():
            df.unpersist()
            return {"version": current_version(target)}  # no operation, no metrics
    _retry_on_conflict(name, lambda: target.alias("t").merge(df.alias("s"), _key_condition(TABLES[name].keys))
                       .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    return last_operation(target)


def _new_or_changed(df, rows, keys: tuple[str, ...], ignore: tuple[str, ...]):
    """The rows of `df` that `rows` (the table) lacks, or holds with another value in a column outside `keys`
    and `ignore` (null equals null; maps are compared as JSON, Spark cannot compare them)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType

    def side(alias: str, column: str):
        c = F.col(f"{alias}.{column}")
        return F.to_json(c) if isinstance(df.schema[column].dataType, MapType) else c

    same = F.expr(_key_condition(keys))
    for column in df.columns:
        if column not in keys and column not in ignore:
            same = same & side("s", column).eqNullSafe(side("t", column))
    return df.alias("s").join(rows.alias("t"), same, "left_anti")


def merge_delete(spark, cfg: Config, name: str, keys) -> dict:
    """Delete the rows whose key is in `keys` (a DataFrame of the key columns)."""
    target = ensure_table(spark, cfg, name)
    _retry_on_conflict(name, lambda: target.alias("t").merge(keys.alias("s"), _key_condition(TABLES[name].keys))
                       .whenMatchedDelete().execute())
    return last_operation(target)


def replace_all(spark, cfg: Config, name: str, df) -> dict:
    """Overwrite the whole table with `df` in one Delta commit (derived tables such as reports)."""
    target = ensure_table(spark, cfg, name)
    _retry_on_conflict(name, lambda: _align(df, _schema(spark, TABLES[name].ddl)).write.format("delta")
                       .mode("overwrite").save(table_path(cfg, name)))
    return last_operation(target)


def stage(spark, cfg: Config, df, name: str):
    """Write `df` once to a scratch Parquet folder under the warehouse and read it back, so the work behind
    it (an engine, a model) runs exactly once although a MERGE reads its source twice. Returns (df, path);
    the caller removes the path (distill.spark.remove_path) after the MERGE."""
    import uuid

    path = table_path(cfg, f"_staging/{name}-{uuid.uuid4().hex[:8]}")
    df.write.mode("overwrite").parquet(path)
    return spark.read.parquet(path), path


# Every commit a job makes carries its run id in Delta's commitInfo.userMetadata (distill.runs sets this
# session setting for the run), so a run finds its own commit even when another job committed after it.
RUN_TAG = "spark.databricks.delta.commitInfo.userMetadata"


def current_version(target) -> int:
    """The table's newest version, whoever made it (what a reader that starts now sees)."""
    return _DeltaLog(target).newest()


def last_operation(target) -> dict:
    """The version and metrics of this run's newest commit to the table: the commit tagged with the run id
    (RUN_TAG), not merely the newest one, which under concurrent writers can be another job's. Without a run
    (no tag set), or when the run made no commit among the newest 100, the newest commit."""
    tag = target._spark.conf.get(RUN_TAG, None)  # the session the table was opened with (delta-spark keeps it)
    log = _DeltaLog(target)
    version = log.newest()
    info = log.commit_info(version)
    if tag and info.get("userMetadata") != tag:  # another job committed since: look further back
        for v in range(version - 1, max(version - 100, -1), -1):
            if (older := log.commit_info(v)).get("userMetadata") == tag:
                version, info = v, older
                break
    metrics = info.get("operationMetrics") or {}
    return {"version": int(version), **{k: int(v) for k, v in metrics.items() if str(v).isdigit()}}


def commits_tagged(spark, cfg: Config, name: str, since: int | None, tag: str) -> bool:
    """Whether every commit to table `name` after version `since` (None: all of them) carries `tag`."""
    from delta.tables import DeltaTable

    log = _DeltaLog(DeltaTable.forPath(spark, table_path(cfg, name)))
    first = 0 if since is None else since + 1
    return all(log.commit_info(v).get("userMetadata") == tag for v in range(first, log.newest() + 1))


class _DeltaLog:
    """A table's commits read from its log, as the Delta protocol lays it out: `_delta_log/<version as 20
    digits>.json`, one JSON action per line, the commit's metrics and userMetadata in its `commitInfo` action;
    `_last_checkpoint` names a recent checkpoint's version. A few small reads on the driver, where Delta's
    history() runs a Spark job per call; jobs ask for a commit's version after every write, dozens of times per
    sample pipeline. (Only jobs write and ask, so the session always has a JVM here, never Spark Connect.)"""

    def __init__(self, target):
        self.spark = target._spark
        self.path = target._jdt.deltaLog().logPath().toString()

    def newest(self) -> int:
        """The newest version: commits are numbered without gaps, so the first missing file after a known
        one (the last checkpoint's, else 0) ends them. Older commit files may have been cleaned up."""
        last = read_text(self.spark, f"{self.path}/_last_checkpoint")
        version = json.loads(last)["version"] if last else 0
        while exists(self.spark, self._commit(version + 1)):
            version += 1
        return version

    def commit_info(self, version: int) -> dict:
        """The commit's commitInfo action ({} if its file was cleaned up)."""
        for line in (read_text(self.spark, self._commit(version)) or "").splitlines():
            if line.strip() and "commitInfo" in (action := json.loads(line)):
                return action["commitInfo"]
        return {}

    def _commit(self, version: int) -> str:
        return f"{self.path}/{version:020d}.json"


