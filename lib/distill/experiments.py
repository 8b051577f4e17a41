"""Experiments: for every variant of `experiments[i]`, its dataset, a student trained on it, and that student's
scores on evaluate.benchmarks, at the cost of only what is new.

1. attempts: a variant whose threshold is above generate.threshold may need attempts the ledger lacks. The
   pairs that need one are counted and said first, then `generate`'s own loop runs at that threshold for
   exactly those (distill.generation.generate_attempts). Nothing is generated twice: the ledger is the cache.
2. datasets (distill.stages.experiment): every variant's selection from `attempts`; the chosen attempts'
   scores from `attempt_scores` (only attempts never scored with the current score_key are scored, once,
   whichever variant or `sft` needed them first); corpus n-grams over the variant's own selection; curate
   with the variant's settings; the optional subsample.
3. students: distill.students packs each dataset (keyed by content) and trains every run without a model in
   one launch. A student is named by its train key (x-<key>), so variants with the same data and recipe share
   one student and one evaluation.
4. evaluation: distill.evaluation for the students (a sample already in `eval_samples` is not asked again).
5. tables: `experiments` (lineage), `experiment_rows` (each dataset's rows), `experiment_results` (figures
   and scores per variant and benchmark). `runs` counts generated, scored, trained and evaluated.
"""

from __future__ import annotations

import json
from functools import reduce

from pyspark.sql import functions as F

from distill.config import variant_settings
from distill.evaluation import evaluate, trained_student
from distill.generation import generate_attempts, pending_attempts
from distill.scoring import score_spec, scores_of
from distill.spark import remove_path
from distill.stages import experiment as ex
from distill.students import build_set, plan_run, train_all, train_root
from distill.tables import current_version, ensure_table, merge_new, merge_upsert, read_table, stage

FOLDER = "experiments"  # sets and runs of every experiment, under train.root, keyed by content


def run_experiment(spark, cfg, rec, index: int) -> list[dict]:
    """Run experiments[index]; returns its experiment_results rows."""
    e = cfg.experiments[index]
    if not cfg.evaluate.benchmarks:
        raise SystemExit("config error: evaluate.benchmarks: an experiment scores its students on these; none given")
    settings = [variant_settings(cfg, index, j) for j in range(len(e.variants))]
    root = train_root(cfg, cfg.train)
    read = lambda name: read_table(spark, cfg, name)  # noqa: E731

    with rec.step("attempts"):
        generated = _more_attempts(spark, cfg, rec, e, settings)
    rec.count("generated", generated)

    attempts, queries = read("attempts"), read("queries")
    selections = {v.name: ex.select(attempts, queries, v.teachers, threshold, cfg.generate.accept_no_verifier)
                  for v, (threshold, _, _) in zip(e.variants, settings, strict=True)}
    scratch: list[str] = []

    def staged(df, name: str):
        """Written once to scratch Parquet and read back (distill.tables.stage), not cached: what later steps
        read is a file scan, so the driver keeps no variant's deep plan (joins, broadcasts) for the whole job."""
        df, path = stage(spark, cfg, df, name)
        scratch.append(path)
        return df

    try:
        with rec.step("scores"):
            chosen = reduce(lambda a, b: a.unionByName(b), selections.values()).dropDuplicates(ex.KEYS)
            scores, stats, _ = scores_of(spark, cfg, rec, chosen, score_spec(spark, cfg))
            scores = staged(scores, "experiment-scores")
        rec.count("scored", sum(s["rows"] for s in stats))
        versions = {name: current_version(ensure_table(spark, cfg, name)) for name in ("attempts", "attempt_scores")}

        variants, kept = [], {}
        for j, (v, (threshold, curate, train)) in enumerate(zip(e.variants, settings, strict=True)):
            data = json.dumps([sorted(v.teachers), threshold, curate.__dict__], sort_keys=True, default=str)
            with rec.step(f"dataset {v.name}"):
                if data not in kept:  # one staged copy per selection and curate settings; subsamples cut from it
                    kept[data] = staged(ex.curated(selections[v.name], scores, curate, cfg.score.ngram_n)
                                        .where(F.col("keep")), f"experiment-{j}")
                rows = _dataset(kept[data], v, f"experiments.{index}.variants.{j}")
                figures = ex.figures(rows)
            label = f"{e.name}/{v.name}"
            the_set = build_set(spark, cfg, rec, train, rows.select("query_id", "teacher", "messages", "response"),
                                root, label, list(v.teachers), None, folder=FOLDER)
            plan = plan_run(train, root, None, list(v.teachers), None, the_set, folder=FOLDER)
            recipe = {"teachers": list(v.teachers), "threshold": threshold, "curate": curate.__dict__,
                      "subsample": None if v.subsample is None else v.subsample.__dict__,
                      "train": {k: plan["spec"][k] for k in sorted(plan["spec"]) if k not in ("data", "out_dir")}}
            variants.append({"variant": v, "threshold": threshold, "rows": rows, "figures": figures, "plan": plan,
                             "recipe": json.dumps(recipe, sort_keys=True, default=str)})
            print(f"experiment: {label}: {figures['rows']} rows, {figures['tokens']} tokens, mean length "
                  f"{_fmt(figures['mean_length'])}, mean perplexity {_fmt(figures['mean_ppl'])}; student "
                  f"{plan['row']['student']}")

        plans = list({x["plan"]["row"]["train_key"]: x["plan"] for x in variants}.values())  # shared students
        rec.count("trained", train_all(spark, cfg, rec, plans))
        students = [trained_student(cfg, p["row"]["student"], p["row"]) for p in plans]
        before = _samples(spark, cfg, [s["student"] for s in students])
        evaluate(spark, cfg, rec, students)
        rec.count("evaluated", _samples(spark, cfg, [s["student"] for s in students]) - before)

        with rec.step("results"):
            return _write(spark, cfg, rec, e.name, variants, versions)
    finally:
        for path in scratch:
            remove_path(spark, path)


def _more_attempts(spark, cfg, rec, e, settings) -> int:
    """Generate the attempts that variants above generate.threshold need; returns how many were added."""
    wanted: dict[float, set[str]] = {}
    for v, (threshold, _, _) in zip(e.variants, settings, strict=True):
        if threshold > cfg.generate.threshold:
            wanted.setdefault(threshold, set()).update(v.teachers)
    if not wanted:
        return 0
    ensure_table(spark, cfg, "attempts")
    count = lambda: read_table(spark, cfg, "attempts").count()  # noqa: E731
    before = count()
    for threshold, names in sorted(wanted.items()):
        need = pending_attempts(spark, cfg, sorted(names), threshold)
        print(f"experiment: {e.name}: threshold {threshold:g} (above generate.threshold "
              f"{cfg.generate.threshold:g}): pairs without an attempt at or above it that can get one: "
              + ", ".join(f"{t} {n}" for t, n in sorted(need.items())))
        teachers = [t for t in cfg.teachers if need.get(t.name)]
        if teachers:
            generate_attempts(spark, cfg, rec, teachers, threshold)
    return count() - before


def _dataset(kept, v, key: str):
    """The variant's kept rows, cut to its subsample when it has one."""
    s = v.subsample
    if s is None:
        return kept
    n = kept.count()
    if s.size > n:
        raise SystemExit(f"experiment: {key}.subsample.size: {s.size} rows asked, the variant keeps {n}")
    buckets = []
    if s.length == "uniform":
        counts = ex.bucket_counts(kept)
        buckets = ex.uniform_buckets(counts, s.size)
        dropped = [b for b, _ in counts if b not in dict(buckets)]
        print(f"experiment: {key}: uniform over {len(buckets)} length buckets (log2 tokens "
              f"{', '.join(str(b) for b, _ in sorted(buckets))})"
              + (f"; too sparse for an equal share: {', '.join(str(b) for b in sorted(dropped))}" if dropped else ""))
    return ex.subsample(kept, s, buckets)


def _samples(spark, cfg, students: list[str]) -> int:
    return read_table(spark, cfg, "eval_samples").where(
        F.col("student").isin(students)).count() if students else 0


def _write(spark, cfg, rec, experiment: str, variants: list[dict], versions: dict) -> list[dict]:
    run_id = F.lit(rec.run_id)
    for x in variants:  # each dataset's rows, once per dataset key
        rows = x["rows"].select(F.lit(x["plan"]["row"]["set_key"]).alias("dataset_key"), "query_id", "teacher",
                                "attempt", "n_tokens", "ppl", "verify_score").withColumn("run_id", run_id)
        rec.wrote("experiment_rows", merge_new(spark, cfg, "experiment_rows", rows)["version"])
    lineage = [{"experiment": experiment, "variant": x["variant"].name, "recipe": x["recipe"],
                "teachers": list(x["variant"].teachers), "threshold": float(x["threshold"]),
                "dataset_key": x["plan"]["row"]["set_key"], "dataset_rows": int(x["figures"]["rows"]),
                "attempts_version": versions["attempts"], "attempt_scores_version": versions["attempt_scores"],
                "student": x["plan"]["row"]["student"], "train_key": x["plan"]["row"]["train_key"],
                "model_path": x["plan"]["row"]["model_path"]} for x in variants]
    df = spark.createDataFrame(lineage, _ddl("experiments")).withColumn("run_id", run_id)
    rec.wrote("experiments", merge_upsert(spark, cfg, "experiments", df, ignore=("run_id",))["version"])

    scores = {(r["student"], r["benchmark"]): r for r in read_table(
        spark, cfg, "eval_results").where(F.col("difficulty") == "all").collect()}
    results = []
    for x in variants:
        student = x["plan"]["row"]["student"]
        f = x["figures"]
        for b in cfg.evaluate.benchmarks:
            r = scores.get((student, b.name))
            results.append({"experiment": experiment, "variant": x["variant"].name, "benchmark": b.name,
                            "rows": f["rows"], "tokens": f["tokens"], "mean_length": f["mean_length"],
                            "length_entropy": f["length_entropy"], "mean_ppl": f["mean_ppl"], "student": student,
                            "pass_at_1": r and r["pass_at_1"], "pass_at_1_stderr": r and r["pass_at_1_stderr"],
                            "mean_tokens": r and r["mean_tokens"], "complete": r and r["complete"]})
    df = spark.createDataFrame(results, _ddl("experiment_results")).withColumn("run_id", run_id)
    rec.wrote("experiment_results", merge_upsert(spark, cfg, "experiment_results", df, ignore=("run_id",))["version"])
    for r in results:
        p1 = "n/a" if r["pass_at_1"] is None else f"{100 * r['pass_at_1']:.1f}"
        print(f"experiment: {experiment}/{r['variant']}: {r['benchmark']}: pass@1 {p1} ({r['rows']} training rows)")
    return results


def _ddl(name: str) -> str:
    """The table's columns without run_id (added by the writer)."""
    from distill.tables import TABLES

    return ", ".join(c.replace(" not null", "") for c in TABLES[name].ddl.split(", ") if not c.startswith("run_id"))


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"
