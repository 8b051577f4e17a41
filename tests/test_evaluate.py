"""The evaluate job on real Spark and Delta with replay students: the figures of eval_results equal values
computed by hand (pass@1 and its standard error, pass@k, maj@k, tokens, stop ratio, per difficulty);
LiveCodeBench rows run through the code verifier (stdin and functional tests), and one whose private tests
are a pickle of anything but a string is recorded as bad, never run, and makes its benchmark incomplete;
a re-run generates and verifies nothing; a new benchmark costs only its own samples; a new model version
is asked again; a crash mid-round followed by a re-run ends with the samples of an uninterrupted run."""

from __future__ import annotations

import base64
import json
import pickle
import zlib

import pytest
import yaml

from tests.conftest import cli_overrides, run_cli

R = "<think>\nworking\n</think>\n<answer>\n\\boxed{%s}\n</answer>"
# (item, sample, answer, tokens_out, finish_reason): q1 right 3 of 4, q2 never (always "3"), q3 2 of 4 with
# a tie between the right answer and "9" (the first seen, right, wins the vote); q3's last sample was cut.
MATH_SAMPLES = [("q1", 1, "4", 10, "stop"), ("q1", 2, "4", 20, "stop"), ("q1", 3, "7", 30, "stop"),
                ("q1", 4, "4", 40, "stop"), *[("q2", s, "3", 5, "stop") for s in range(1, 5)],
                ("q3", 1, "12", 100, "stop"), ("q3", 2, "9", 200, "stop"), ("q3", 3, "12", 300, "stop"),
                ("q3", 4, "9", 400, "length")]
MATH = [{"id": "q1", "problem": "What is 2 + 2?", "answer": "4", "level": "easy"},
        {"id": "q2", "problem": "What is 10 - 3?", "answer": "7", "level": "easy"},
        {"id": "q3", "problem": "What is 3 * 4?", "answer": "12", "level": "hard"}]


def lcb_row(qid: str, private, tests_public: list, metadata: dict) -> dict:
    return {"question_id": qid, "question_title": qid, "question_content": f"Problem {qid}.", "platform": "t",
            "contest_date": "2025-01-01T00:00:00", "starter_code": "", "difficulty": "easy",
            "public_test_cases": json.dumps(tests_public), "private_test_cases": private,
            "metadata": json.dumps(metadata)}


def lcb_private(tests: list) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


FUNCTIONAL = [{"input": "[1, 2, 3]", "output": "6", "testtype": "functional"}]
STDIN = [{"input": "3\n", "output": "9\n", "testtype": "stdin"}]
CODE = [
    lcb_row("sum", lcb_private([{"input": "[5]", "output": "5", "testtype": "functional"}]), FUNCTIONAL,
            {"func_name": "total"}),
    lcb_row("square", lcb_private([{"input": "5\n", "output": "25\n", "testtype": "stdin"}]), STDIN, {}),
    # a pickle of a list, not of a string: refused, never run
    lcb_row("bad", base64.b64encode(zlib.compress(pickle.dumps(STDIN))).decode(), STDIN, {}),
]
CODE_SAMPLES = [
    ("sum", 1, "class Solution:\n    def total(self, nums):\n        return sum(nums)"),
    ("sum", 2, "class Solution:\n    def total(self, nums):\n        return max(nums)"),
    ("square", 1, "n = int(input())\nprint(n * n)"),
    ("square", 2, "n = int(input())\nprint(n * n)"),
    ("bad", 1, "print(1)"), ("bad", 2, "print(1)"),
]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def setup(spark, cfg, tmp_path):
    """Two benchmarks (plain math with levels, LiveCodeBench rows) and one replay student: CLI arguments."""
    replay = [{"benchmark": "math", "id": i, "sample": s, "response": R % a, "tokens_out": t, "finish_reason": f}
              for i, s, a, t, f in MATH_SAMPLES]
    replay += [{"benchmark": "code", "id": i, "sample": s, "response": f"<answer>\n```python\n{c}\n```\n</answer>",
                "tokens_out": 8} for i, s, c in CODE_SAMPLES]
    replay += [{"benchmark": "more", "id": "q9", "sample": s, "response": R % "2"} for s in (1, 2, 3)]  # see below
    conf = {"evaluate": {
        "benchmarks": [
            {"name": "math", "path": write_jsonl(tmp_path / "math.jsonl", MATH), "kind": "math", "samples": 4},
            {"name": "code", "path": write_jsonl(tmp_path / "code.jsonl", CODE), "kind": "code", "samples": 2}],
        "students": [{"name": "r", "engine": "replay", "model": write_jsonl(tmp_path / "r.jsonl", replay),
                      "teacher": "t"}],
        "partitions": 2}, "verify": {"math": {"workers": 1}, "code": {"workers": 1}}}
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return ["--conf", str(path), *cli_overrides(cfg)]


def table(spark, cfg, name):
    return spark.read.format("delta").load(f"{cfg.warehouse}/{name}")


def results(spark, cfg) -> dict:
    return {(r.benchmark, r.difficulty): r for r in table(spark, cfg, "eval_results").collect()}


def samples(spark, cfg) -> list[tuple]:
    return sorted(tuple(r) for r in table(spark, cfg, "eval_samples").select(
        "student", "benchmark", "item_id", "sample", "response", "status", "score", "correct", "run_id").collect())


def last_run(spark, cfg):
    return table(spark, cfg, "runs").where("job = 'evaluate'").orderBy("started_at", ascending=False).first()


def test_figures_equal_the_hand_computed_values_and_a_rerun_costs_only_what_is_new(spark, cfg, setup, tmp_path):
    """One warehouse for both: the figures of the first run, then re-runs (nothing new, a new benchmark,
    a new model)."""
    assert run_cli("evaluate", *setup) == 0
    got = results(spark, cfg)
    assert sorted(got) == [("code", "all"), ("code", "easy"), ("math", "all"), ("math", "easy"), ("math", "hard")]
    m = got[("math", "all")]
    assert (m.items, m.bad_items, m.samples_expected, m.samples_min, m.samples_max, m.complete) == (
        3, 0, 4, 4, 4, True)
    assert m.pass_at_1 == pytest.approx(5 / 12)  # 3 + 0 + 2 correct of 12
    # per sample index: 2/3, 1/3, 1/3, 1/3; their sd (ddof 1) is 1/6, over sqrt(4) indices: 1/12
    assert m.pass_at_1_stderr == pytest.approx(1 / 12)
    # pass@2 per item: 1 - C(n-c,2)/C(4,2): q1 1, q2 0, q3 1 - 1/6; pass@4: 1, 0, 1
    assert m.pass_at_k == pytest.approx({1: 5 / 12, 2: (1 + 0 + 5 / 6) / 3, 4: 2 / 3})
    assert m.maj_at_k == pytest.approx(2 / 3)  # q1 "4" right; q2 "3" wrong; q3 tie, "12" seen first, right
    assert m.mean_tokens == pytest.approx(1120 / 12) and m.median_tokens == pytest.approx(25.0)
    assert m.mean_tokens_correct == pytest.approx((10 + 20 + 40 + 100 + 300) / 5)
    assert m.mean_tokens_wrong == pytest.approx((30 + 4 * 5 + 200 + 400) / 7)
    assert m.stop_ratio == pytest.approx(11 / 12)
    easy, hard = got[("math", "easy")], got[("math", "hard")]
    assert (easy.items, easy.pass_at_1, easy.difficulty_order) == (2, pytest.approx(3 / 8), 1)
    assert (hard.items, hard.pass_at_1, hard.maj_at_k, hard.difficulty_order) == (1, 0.5, 1.0, 2)

    # code: `sum` right once of two (functional), `square` twice (stdin); `bad` is never asked
    c = got[("code", "all")]
    assert (c.items, c.bad_items, c.complete, c.pass_at_1, c.maj_at_k) == (2, 1, False, 0.75, None)
    bad = table(spark, cfg, "eval_items").where("item_id = 'bad'").first()
    assert bad.bad_reason.startswith("private_test_cases: pickle refused")
    assert table(spark, cfg, "eval_samples").where("item_id = 'bad'").count() == 0
    rows = {(r.item_id, r.sample): (r.status, r.score, r.correct) for r in
            table(spark, cfg, "eval_samples").where("benchmark = 'code'").collect()}
    assert rows == {("sum", 1): ("ok", 1.0, True), ("sum", 2): ("ok", 0.5, False),
                    ("square", 1): ("ok", 1.0, True), ("square", 2): ("ok", 1.0, True)}

    run = last_run(spark, cfg)
    assert run.counts["r.generated"] == 12 + 4 and run.counts["code.bad_items"] == 1

    # a re-run costs nothing (the first run settled: it stops at once), a new benchmark only its samples, a new
    # model all
    before = samples(spark, cfg)
    assert run_cli("evaluate", *setup) == 0
    run = last_run(spark, cfg)
    assert run.counts == {"code.items": 3, "code.bad_items": 1, "math.items": 3, "settled_before": 1}
    assert samples(spark, cfg) == before

    conf = yaml.safe_load((tmp_path / "conf.yaml").read_text())
    more = [{"id": "q9", "problem": "What is 1 + 1?", "answer": "2"}]
    conf["evaluate"]["benchmarks"].append({"name": "more", "path": write_jsonl(tmp_path / "more.jsonl", more),
                                           "kind": "math", "samples": 3})
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(conf))
    assert run_cli("evaluate", *setup) == 0
    run = last_run(spark, cfg)
    assert (run.counts["r.generated"], run.counts["stale_samples"]) == (3, 0)
    assert results(spark, cfg)[("more", "all")].pass_at_1 == 1.0
    assert [r for r in samples(spark, cfg) if r[1] != "more"] == before

    # a changed replay file is another model: every sample is asked again
    with open(tmp_path / "r.jsonl", "a") as f:
        f.write(json.dumps({"benchmark": "elsewhere", "id": "x", "sample": 1, "response": "unused"}) + "\n")
    assert run_cli("evaluate", *setup) == 0
    run = last_run(spark, cfg)
    assert (run.counts["r.generated"], run.counts["stale_samples"]) == (12 + 4 + 3, 12 + 4 + 3)


def test_crashes_mid_round_then_a_rerun_end_as_an_uninterrupted_run(spark, cfg, setup, monkeypatch, tmp_path):
    import distill.faults
    import distill.generation  # imported before the patch, so that undo() puts the real crash_point back

    class Killed(BaseException):  # not an Exception: nothing in the job may catch it, as with SIGKILL
        pass

    # the first run dies with its round staged and not merged; the re-run, with its round merged and the
    # staged rows not yet removed; the third ends
    for point in ("evaluate.staged", "evaluate.merged"):
        def crash(name, point=point):
            if name == point:
                raise Killed

        monkeypatch.setattr(distill.faults, "crash_point", crash)
        monkeypatch.setattr(distill.generation, "crash_point", crash)
        with pytest.raises(Killed):
            run_cli("evaluate", *setup)
        monkeypatch.undo()
    assert run_cli("evaluate", *setup) == 0
    got = samples(spark, cfg)
    keys = [r[:4] for r in got]
    assert len(keys) == len(set(keys))
    # what an uninterrupted run stores: every replayed sample of the usable items, verified
    replayed = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r[:5] for r in got] == sorted(("r", x["benchmark"], x["id"], x["sample"], x["response"])
                                          for x in replayed if x["benchmark"] != "more" and x["id"] != "bad")
    assert all(r[5] == "ok" for r in got) and results(spark, cfg)[("math", "all")].pass_at_1 == pytest.approx(5 / 12)


def test_an_unknown_student_or_bad_benchmark_is_a_config_error(spark, cfg, setup, tmp_path, capsys):
    assert run_cli("evaluate", *setup, "--set", "evaluate.benchmarks.0.format=csv") == 2
    assert "evaluate.benchmarks.0.format: must be one of" in capsys.readouterr().err
    conf = yaml.safe_load((tmp_path / "conf.yaml").read_text())
    conf["evaluate"]["students"].append({"name": "s", "train": "nobody"})
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(conf))
    assert run_cli("evaluate", *setup) == 2
    assert "evaluate.students.1.train: no student 'nobody' in the `students` table" in capsys.readouterr().err
