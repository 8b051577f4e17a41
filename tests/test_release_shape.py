"""The a-m-team releases as input (distill.release_shape): release rows written here in the releases' shape
(made-up questions, not copied data) become queries (the prompt turns, the reference answer and converted
test cases from the turns' info; a row that cannot is quarantined with a reason) and a replay teacher's
responses (the last assistant turn, or its think and answer parts, with the release's own verify score). On
Spark: an `attempts` table made before the release column gets it; the agreement and disagreement stages
count exactly; and ingest -> generate (replaying the release beside a teacher of our own) -> report carries
each release score into `attempts`, puts the planted agreement figures in `report_release` and lists exactly
the planted disagreement."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from distill.config import CATEGORIES, ConfigError, TeacherConfig, load_config
from distill.engines import check_engine
from distill.engines.base import Request
from distill.engines.replay import NO_RESPONSE, ReplayEngine, ReplayOptions
from distill.records import Rejected, parse_line, parse_record
from distill.release_shape import release_query_ids, release_response, release_test_cases
from distill.tables import TABLES, ensure_table, merge_new, table_path
from pyspark.sql import functions as F
from pyspark.sql.types import StructType
from pyspark.testing import assertDataFrameEqual

from tests.conftest import ROOT, cli_overrides, run_cli


def turn(role: str, content, **info) -> dict:
    """One turn as the releases write it: every info field present, null where it does not apply."""
    fields = dict.fromkeys(("source", "reference_answer", "test_case", "think_content", "answer_content"))
    return {"role": role, "content": content, "info": {**fields, **info}}


def release_row(question: str, response: str | None, *, reference=None, test_case=None, score=1.0,
                think=None, answer=None, before=()) -> dict:
    """A release row: earlier turns (`before`), the user's question with its reference or tests, the answer."""
    return {"messages": [*before, turn("user", question, source="made-up-set", reference_answer=reference,
                                       test_case=test_case),
                         turn("assistant", response, source="made-up-teacher", think_content=think,
                              answer_content=answer, verify_score=score)]}


def answer(text: str) -> str:
    return f"<think>\nworking\n</think>\n<answer>\n{text}\n</answer>"


def parse(row: dict, category: str = "math", fields=None):
    return parse_line(json.dumps(row).encode(), "am", 1 << 20, fields, category, "am-release")


# --- rows as queries -------------------------------------------------------------------------------------

def test_a_math_row_becomes_its_question_with_the_reference_and_the_release_source_kept():
    got = parse(release_row("What is 2 + 3?", answer("\\boxed{5}"), reference="5"))
    assert got.reason is None
    q = got.row
    assert (q["category"], q["source"], q["source_id"]) == ("math", "am", None)
    assert q["messages"] == [{"role": "user", "content": "What is 2 + 3?"}]
    assert (q["reference_answer"], q["test_cases"], q["constraints"]) == ("5", None, None)
    assert json.loads(q["metadata"]) == {"release_source": "made-up-set"}
    # the replay of the same row finds this query by the same id, with the category given or not
    row = release_row("What is 2 + 3?", answer("\\boxed{5}"), reference="5")
    assert release_query_ids(row, "am", "math", None) == [q["query_id"]]
    assert q["query_id"] in release_query_ids(row, "am", None, None)
    assert len(release_query_ids(row, "am", None, None)) == len(CATEGORIES)


def test_a_chat_row_is_the_conversation_before_the_last_assistant_turn():
    before = [turn("system", "Be brief."), turn("user", "Hi"), turn("assistant", "Hello! How can I help?")]
    q = parse(release_row("Name a prime.", answer("7"), before=before), "multi_turn").row
    assert q["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello! How can I help?"},
                             {"role": "user", "content": "Name a prime."}]
    assert q["category"] == "multi_turn" and q["reference_answer"] is None


def test_a_row_with_its_own_id_keeps_it():
    row = {**release_row("What is 1 + 1?", answer("2"), reference="2"), "id": "r-17"}
    q = parse(row).row
    assert q["source_id"] == "r-17"
    assert release_query_ids(row, "am", None, None) == [q["query_id"]]  # an own id holds no category


def test_fields_rename_the_release_fields():
    row = {"conv": [{"role": "user", "content": "What is 3 + 3?", "meta": {"gold": "6"}},
                    {"role": "assistant", "content": "x", "meta": {"score": 0.25}}]}
    fields = {"messages": "conv", "info": "meta", "reference_answer": "gold", "verify_score": "score"}
    assert parse(row, fields=fields).row["reference_answer"] == "6"
    assert release_response(row, fields)["release_score"] == 0.25


def test_code_test_cases_convert_from_the_forms_we_can_run():
    stdio = {"language": "python", "tests": [{"type": "stdio", "input": "4\n", "output": "8\n"},
                                             {"type": "stdio", "input": "0\n", "output": "0\n"}]}
    assert release_test_cases(json.dumps({"inputs": ["4\n", "0\n"], "outputs": ["8\n", "0\n"]})) == stdio
    assert release_test_cases({"inputs": ["4\n", "0\n"], "outputs": ["8\n", "0\n"], "fn_name": None}) == stdio
    assert release_test_cases([{"input": "4\n", "output": "8\n"}, {"input": "0\n", "output": "0\n"}]) == stdio
    assert release_test_cases(json.dumps(["assert f(1) == 2", "  assert f(2) == 4"])) == {
        "language": "python", "tests": [{"type": "assert", "code": "assert f(1) == 2"},
                                        {"type": "assert", "code": "  assert f(2) == 4"}]}
    cpp = {"language": "cpp", "tests": [{"type": "stdio", "input": "1 2\n", "output": "3\n"}]}
    assert release_test_cases(cpp) == cpp  # already our own form
    assert release_test_cases({"inputs": ["1 2\n"], "outputs": ["3\n"], "language": "cpp"}) == cpp
    for nothing in (None, "", "  ", "[]", {}, []):
        assert release_test_cases(nothing) is None
    # and on through records: the query holds them as the TEST_CASES struct's rows
    row = release_row("Read n, print n*2.", answer("```python\nprint(int(input())*2)\n```"),
                      test_case=json.dumps({"inputs": ["4\n"], "outputs": ["8\n"]}))
    assert parse(row, "code").row["test_cases"] == {
        "language": "python", "tests": [{"type": "stdio", "input": "4\n", "output": "8\n", "code": None}]}


@pytest.mark.parametrize("test_case, detail", [
    ({"fn_name": "double", "inputs": [[1]], "outputs": [[2]]}, "call-based tests (fn_name 'double')"),
    ("print(f(1))", "not JSON"),
    ({"inputs": ["1\n"], "outputs": []}, "arrays of strings of one length"),
    ({"inputs": [[1, 2]], "outputs": ["3"]}, "arrays of strings of one length"),
    ({"test": "assert f(1)"}, "an object with keys ['test']"),
    (["print(1)"], "an array of str"),
    (42, "int"),
])
def test_a_test_case_that_does_not_convert_is_rejected_with_what_it_is(test_case, detail):
    with pytest.raises(Rejected) as err:
        release_test_cases(test_case)
    assert err.value.reason == "unsupported_test_case" and detail in err.value.detail
    got = parse(release_row("Write f.", answer("x"), test_case=test_case), "code")
    assert (got.row, got.reason) == (None, "unsupported_test_case")


@pytest.mark.parametrize("row, reason", [
    ({"messages": "What is 2 + 2?"}, "invalid_messages"),
    ({"messages": []}, "invalid_messages"),
    ({"conversation": [turn("user", "Hi")]}, "invalid_messages"),
    ({"messages": ["Hi"]}, "invalid_messages"),
    ({"messages": [{"role": "user", "content": "Hi", "info": "n/a"}]}, "invalid_messages"),
    ({"messages": [turn("assistant", "an answer to nothing")]}, "invalid_messages"),  # no prompt left
    ({"messages": [turn("user", None), turn("assistant", "x")]}, "invalid_content"),
    ({"messages": [turn("robot", "beep"), turn("assistant", "x")]}, "invalid_role"),
    ({"messages": [turn("user", "Hi"), turn("assistant", "x"), turn("assistant", "y")]}, "invalid_role"),
    ([turn("user", "Hi")], "not_an_object"),
])
def test_bad_rows_are_rejected_with_a_reason(row, reason):
    got = parse(row)
    assert (got.row, got.reason) == (None, reason)
    assert parse_record(row, "am", None, "math", "am-release").reason == reason  # a Parquet row alike


def test_the_shape_is_a_checked_setting():
    with pytest.raises(ConfigError, match=r"ingest\.sources\.0\.category: shape am-release needs one of"):
        load_config(None, ["ingest.sources=[{name: am, path: p.jsonl, shape: am-release}]"])
    with pytest.raises(ConfigError, match=r"ingest\.sources\.0\.fields\.query: not a field of shape am-release"):
        load_config(None, ["ingest.sources=[{name: am, path: p.jsonl, shape: am-release, category: math, "
                           "fields: {query: q}}]"])
    with pytest.raises(ConfigError, match=r"ingest\.sources\.0\.shape: must be one of default, am-release"):
        load_config(None, ["ingest.sources=[{name: am, path: p.jsonl, shape: sharegpt}]"])
    example = load_config(ROOT / "conf/am-release.yaml")  # the documented example config is a valid one
    assert {(s.shape, s.category) for s in example.ingest.sources} == {
        ("am-release", c) for c in ("math", "code", "science", "instruction_following", "multi_turn")}
    assert [t.engine_args["shape"] for t in example.teachers] == ["am-release", "am-release"]
    for args, message in [({"shape": "am-release"}, r"engine_args\.source: shape am-release with match id needs"),
                          ({"shape": "am-release", "source": "am", "category": "chat"},
                           r"engine_args\.category: 'chat' is not one of"),
                          ({"shape": "am-release", "match": "text", "fields": {"response": "r"}},
                           r"engine_args\.fields\.response: not a field")]:
        with pytest.raises(ConfigError, match=message):
            check_engine(TeacherConfig("t", "replay", str(Path(__file__)), args), "teachers.0")


def test_the_shape_is_part_of_a_files_parse_key_and_the_default_key_is_the_one_from_before(tmp_path):
    from distill.ids import canonical_json, stable_id
    from distill.stages.ingest import PARSE_VERSION, FileTask, file_key

    path = write(tmp_path / "math.jsonl", [release_row("What is 2 + 3?", answer("5"), reference="5")])
    plain = FileTask("am", path, "jsonl", "math")
    before = stable_id(canonical_json([PARSE_VERSION, "am", "jsonl", "math", (), 100, 10]))[:16]
    assert file_key(plain, 100, 10)[2] == before  # a file remembered before shapes existed is not read again
    assert file_key(FileTask("am", path, "jsonl", "math", shape="am-release"), 100, 10)[2] != before


# --- rows as responses ------------------------------------------------------------------------------------

def write(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def request(messages: list[dict], qid: str | None = None, attempt: int = 1) -> Request:
    from distill.config import SamplingConfig

    return Request("k", [{"role": "system", "content": "Think first."}, *messages], 0, SamplingConfig(),
                   query_id=qid, attempt=attempt)


def test_replay_serves_the_last_assistant_turn_with_the_release_score(tmp_path):
    tagged = release_row("What is 2 + 3?", answer("\\boxed{5}"), reference="5", score=1.0)
    split = release_row("What is 7 * 6?", "The product is 42.", reference="42", score=0.5,
                        think="7 * 6 = 42", answer="\\boxed{42}")  # content without tags: think and answer parts
    plain = release_row("Name a colour.", "Blue.", score=None)  # neither: the content as it is
    plain["verify_score"] = "0.75"  # the score on the row itself (a numeric text)
    no_answer = {"messages": [turn("user", "Unanswered?")]}
    path = write(tmp_path / "math.jsonl", [tagged, split, plain, no_answer])

    engine = ReplayEngine(path, ReplayOptions(match="text", shape="am-release"))
    out = engine.generate([request([{"role": "user", "content": q}]) for q in
                           ("What is 2 + 3?", "what is 7 *  6?", "Name a colour.", "Unanswered?")])
    assert [c.text for c in out] == [answer("\\boxed{5}"), "<think>\n7 * 6 = 42\n</think>\n<answer>\n\\boxed{42}\n"
                                     "</answer>", "Blue.", None]
    assert [c.release_score for c in out] == [1.0, 0.5, 0.75, None]
    assert out[3].error == f"{NO_RESPONSE} for attempt 1"

    # by id: the id ingest gave the query (as source "am" with category math)
    by_id = ReplayEngine(path, ReplayOptions(shape="am-release", source="am", category="math"))
    q = parse(tagged).row
    got = by_id.generate([request(q["messages"], q["query_id"]), request(q["messages"], q["query_id"], 2)])
    assert (got[0].text, got[0].release_score) == (answer("\\boxed{5}"), 1.0)
    assert got[1].error == f"{NO_RESPONSE} for attempt 2"
    other = parse(tagged, "science").row["query_id"]  # the same row ingested as another category
    assert by_id.generate([request(q["messages"], other)])[0].text is None
    any_category = ReplayEngine(path, ReplayOptions(shape="am-release", source="am"))
    assert any_category.generate([request(q["messages"], other)])[0].release_score == 1.0


def test_other_engines_and_plain_replay_carry_no_release_score(tmp_path):
    path = write(tmp_path / "r.jsonl", [{"query": "What is 2 + 3?", "response": answer("5"), "verify_score": 1.0}])
    out = ReplayEngine(path, ReplayOptions(match="text")).generate([request([{"role": "user",
                                                                             "content": "What is 2 + 3?"}])])
    assert out[0].text == answer("5") and out[0].release_score is None


# --- Spark: the table, the stages, the jobs ------------------------------------------------------------

def test_an_attempts_table_made_before_the_release_column_gets_it(spark, cfg):
    from delta.tables import DeltaTable
    from distill.tables import _properties

    path = table_path(cfg, "attempts")
    old = StructType([f for f in StructType.fromDDL(TABLES["attempts"].ddl).fields
                      if f.name != "release_verify_score"])
    builder = DeltaTable.create(spark).location(path).addColumns(old)  # as the code before the column made it
    for key, value in _properties(TABLES["attempts"]).items():
        builder = builder.property(key, value)
    builder.execute()
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    row = {"query_id": "q1", "teacher": "t", "attempt": 1, "category": "math", "engine": "replay", "model": "m",
           "seed": 1, "response": answer("1"), "run_id": "r", "generated_at": now, "verify_score": 1.0,
           "verify_status": "ok", "accepted": True}
    nullable = StructType([f.__class__(f.name, f.dataType, True) for f in old.fields])
    spark.createDataFrame([{f: row.get(f) for f in old.fieldNames()}], nullable).write.format("delta").mode(
        "append").save(path)

    # a writer of today gives every declared column: the table gains the one it lacks, the old row has null
    new = {**row, "query_id": "q2", "release_verify_score": 0.5}
    schema = StructType([f.__class__(f.name, f.dataType, True) for f in StructType.fromDDL(TABLES["attempts"].ddl)])
    merge_new(spark, cfg, "attempts", spark.createDataFrame([{f: new.get(f) for f in schema.fieldNames()}], schema))
    got = spark.read.format("delta").load(path).select("query_id", "release_verify_score")
    assertDataFrameEqual(got, spark.createDataFrame([("q1", None), ("q2", 0.5)],
                                                    "query_id string, release_verify_score double"))
    ensure_table(spark, cfg, "attempts")  # checked again: nothing more to add


ATTEMPT = ("query_id string, teacher string, attempt int, category string, verify_score double, "
           "verify_status string, verifier string, release_verify_score double")


def test_agreement_and_disagreements_count_exactly(spark):
    from distill.stages.report import release_agreement, release_disagreements

    rows = [  # teacher r replays a release; teacher own is ours (no release score: not counted)
        ("m1", "r", 1, "math", 1.0, "ok", "math", 1.0),         # both pass
        ("m2", "r", 1, "math", 0.0, "ok", "math", 0.95),        # the release passes it, we do not
        ("m3", "r", 1, "math", None, "parse_error", "math", 1.0),  # no answer found: our fail
        ("m4", "r", 1, "math", 1.0, "ok", "math", 0.2),         # we pass it, the release does not
        ("m5", "r", 1, "math", 0.0, "ok", "math", 0.0),         # both fail
        ("m6", "r", 1, "math", None, "timeout", "math", 1.0),   # no verdict of ours: not compared
        ("g1", "r", 1, "general", 0.0, "no_verifier", "none", 0.8),
        ("m1", "own", 1, "math", 1.0, "ok", "math", None),
    ]
    attempts = spark.createDataFrame(rows, ATTEMPT)
    got = release_agreement(attempts, 0.9)
    schema = ("teacher string, category string, responses long, compared long, release_passed long, passed long, "
              "agreed long, agreement_rate double, release_only long, ours_only long, mean_release_score double, "
              "mean_verify_score double")
    want = spark.createDataFrame([
        ("r", "math", 6, 5, 3, 2, 2, 0.4, 2, 1, (1.0 + 0.95 + 1.0 + 0.2 + 0.0) / 5, 2.0 / 4),
        ("r", "general", 1, 0, 0, 0, 0, None, 0, 0, None, None),
        ("r", "all", 7, 5, 3, 2, 2, 0.4, 2, 1, (1.0 + 0.95 + 1.0 + 0.2 + 0.0) / 5, 2.0 / 4),
    ], schema)
    assertDataFrameEqual(got, want)
    want = spark.createDataFrame([
        ("m3", "r", 1, "math", 1.0, None, "parse_error", "math", True, False),
        ("m2", "r", 1, "math", 0.95, 0.0, "ok", "math", True, False),
        ("m4", "r", 1, "math", 0.2, 1.0, "ok", "math", False, True),
    ], "query_id string, teacher string, attempt int, category string, release_verify_score double, "
       "verify_score double, verify_status string, verifier string, release_passed boolean, passed boolean")
    assertDataFrameEqual(release_disagreements(attempts, 0.9), want)
    capped = release_disagreements(attempts, 0.9, limit=2).collect()  # the widest gaps are kept
    assert sorted(r.query_id for r in capped) == ["m2", "m3"]


RELEASE = {  # file -> rows, in the releases' shape (one file per category)
    "math.jsonl": [
        release_row("What is 2 + 3?", answer("\\boxed{5}"), reference="5", score=1.0),
        # planted: the release says it passed (score 1.0), but the answer is wrong: ours fails it
        release_row("What is 7 * 6?", answer("\\boxed{41}"), reference="42", score=1.0),
        release_row("What is 10 - 4?", "It is 6.", reference="6", score=1.0, think="10 - 4 = 6",
                    answer="\\boxed{6}"),
    ],
    "code.jsonl": [
        release_row("Read n and print n*2.", answer("```python\nprint(int(input()) * 2)\n```"),
                    test_case=json.dumps({"inputs": ["4\n", "0\n"], "outputs": ["8\n", "0\n"]}), score=1.0),
        # call-based tests are not converted: quarantined, with the reason
        release_row("Write double(x).", answer("```python\ndef double(x):\n    return 2 * x\n```"),
                    test_case=json.dumps({"fn_name": "double", "inputs": [[1]], "outputs": [[2]]}), score=1.0),
    ],
    "chat.jsonl": [
        release_row("And in winter?", answer("Owls hunt at night in winter too."), score=0.8,
                    before=[turn("user", "When do owls hunt?"), turn("assistant", "At night.")]),
    ],
}
CATEGORY = {"math.jsonl": "math", "code.jsonl": "code", "chat.jsonl": "multi_turn"}


@pytest.fixture
def release_warehouse(spark, cfg, tmp_path):
    """The release's files ingested as queries (kept), and a config replaying the release as teacher
    `am-thinking` beside a teacher of our own that answered the first math question."""
    folder = tmp_path / "release"
    folder.mkdir()
    for name, rows in RELEASE.items():
        write(folder / name, rows)
    own = write(tmp_path / "own.jsonl", [{"query": "What is 2 + 3?", "response": answer("\\boxed{5}")}])
    conf = {
        "ingest": {"sources": [{"name": "am", "path": str(folder / name), "category": CATEGORY[name],
                                "shape": "am-release"} for name in RELEASE]},
        "teachers": [
            {"name": "am-thinking", "engine": "replay", "model": str(folder),
             "engine_args": {"shape": "am-release", "source": "am"}},
            {"name": "own", "engine": "replay", "model": own, "engine_args": {"match": "text"}},
        ],
        "generate": {"max_attempts": 1, "accept_no_verifier": True, "partitions": 1},
        "verify": {"math": {"timeout_s": 10.0, "workers": 1}, "code": {"workers": 1}},
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    args = ["--conf", str(path), *cli_overrides(cfg)]
    assert run_cli("ingest", *args) == 0
    # prepare's filters are not what this is about: every ingested query is kept
    spark.sql(f"UPDATE delta.`{table_path(cfg, 'queries')}` SET status = 'kept'")
    return args


def test_a_release_is_ingested_replayed_verified_and_set_beside_ours(spark, cfg, release_warehouse):
    args = release_warehouse
    read = lambda name: spark.read.format("delta").load(table_path(cfg, name))  # noqa: E731
    quarantine = read("quarantine").select("source_file", "line", "reason").collect()
    assert [(Path(r.source_file).name, r.line, r.reason) for r in quarantine] == [
        ("code.jsonl", 2, "unsupported_test_case")]
    assert read("queries").count() == 5

    assert run_cli("generate", *args) == 0
    texts = read("queries").select("query_id", F.element_at("messages", -1)["content"].alias("question"))
    attempts = read("attempts").join(texts, "query_id").select(
        "question", "teacher", "attempt", "category", "verify_status", "verify_score", "release_verify_score")
    assertDataFrameEqual(attempts, spark.createDataFrame([
        ("What is 2 + 3?", "am-thinking", 1, "math", "ok", 1.0, 1.0),
        ("What is 7 * 6?", "am-thinking", 1, "math", "ok", 0.0, 1.0),
        ("What is 10 - 4?", "am-thinking", 1, "math", "ok", 1.0, 1.0),
        ("Read n and print n*2.", "am-thinking", 1, "code", "ok", 1.0, 1.0),
        ("And in winter?", "am-thinking", 1, "multi_turn", "no_verifier", 0.0, 0.8),
        ("What is 2 + 3?", "own", 1, "math", "ok", 1.0, None),
    ], "question string, teacher string, attempt int, category string, verify_status string, "
       "verify_score double, release_verify_score double"))

    ensure_table(spark, cfg, "sft")  # the report reads `sft` too; its figures are not what this is about
    assert run_cli("report", *args) == 0
    schema = ("teacher string, category string, responses long, compared long, release_passed long, passed long, "
              "agreed long, agreement_rate double, release_only long, ours_only long, mean_release_score double, "
              "mean_verify_score double")
    assertDataFrameEqual(read("report_release").drop("run_id"), spark.createDataFrame([
        ("am-thinking", "math", 3, 3, 3, 2, 2, 2 / 3, 1, 0, 1.0, 2 / 3),
        ("am-thinking", "code", 1, 1, 1, 1, 1, 1.0, 0, 0, 1.0, 1.0),
        ("am-thinking", "multi_turn", 1, 0, 0, 0, 0, None, 0, 0, None, None),
        ("am-thinking", "all", 5, 4, 4, 3, 3, 0.75, 1, 0, 1.0, 0.75),
    ], schema))
    wrong = read("queries").where(F.element_at("messages", -1)["content"] == "What is 7 * 6?").first().query_id
    assertDataFrameEqual(read("report_release_disagreements").drop("run_id"), spark.createDataFrame(
        [(wrong, "am-thinking", 1, "math", 1.0, 0.0, "ok", "math", True, False)],
        "query_id string, teacher string, attempt int, category string, release_verify_score double, "
        "verify_score double, verify_status string, verifier string, release_passed boolean, passed boolean"))
    page = (Path(cfg.output_dir) / "report" / "report.html").read_text()
    assert "Releases' own verification beside ours" in page
    assert "Where the verdicts differ" in page and wrong in page
