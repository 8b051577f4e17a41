"""RunRecorder.watch: rows done out of the total while a Spark stage runs, from an accumulator the tasks feed."""

import re
import time

import pandas as pd
from distill.runs import RunRecorder


def test_watch_counts_rows_as_tasks_finish(spark, cfg, capsys):
    rec = RunRecorder(spark, cfg, "demo")
    rec.progress_every = 0.2
    df = spark.range(0, 60, numPartitions=6)

    with rec.watch("rows done", 60) as counter:
        def slow(batches):
            for pdf in batches:
                time.sleep(0.5)  # long enough for a few progress lines while tasks finish one by one
                yield pd.DataFrame({"id": pdf["id"] * 2})
                counter.add(len(pdf))

        doubled = sorted(r.id for r in df.mapInPandas(slow, "id long").collect())
    assert doubled == [2 * i for i in range(60)]

    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("distill: demo: rows done:")]
    done = [int(re.search(r": ([\d,]+) of 60", ln).group(1).replace(",", "")) for ln in lines]
    assert lines[-1] == "distill: demo: rows done: 60 of 60 (100%)"
    assert len(lines) >= 3, lines  # lines while it ran, then the last one
    assert done == sorted(done) and all(d % 10 == 0 for d in done), lines  # whole tasks of 10 rows at a time
    assert any("Spark tasks" in ln for ln in lines[:-1]), lines


def test_watch_caps_a_retried_count_at_the_total(spark, cfg, capsys):
    rec = RunRecorder(spark, cfg, "demo")
    with rec.watch("rows done", 5) as counter:
        spark.range(0, 1, numPartitions=1).foreach(lambda _: counter.add(7))
    assert capsys.readouterr().out.splitlines()[-1] == "distill: demo: rows done: 5 of 5 (100%)"
