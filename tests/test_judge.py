"""LLM judges: versioned score parsing on both sides (readable, out of range, missing), the science and
quality verifiers over a scripted engine (ok, parse_error on unreadable output, infra_error on engine
failure, no answer), the math and IFEval verdicts in one batch each, versions that change with the judge
model (and its weights), the verifier registry (config picks the verifier of a category, a score outside a
verifier's range is an infra_error), and one judge end to end through the OpenAI-compatible engine against a
local server."""

from __future__ import annotations

import pytest
from distill.config import CATEGORIES, SamplingConfig, TeacherConfig
from distill.engines.base import Completion
from distill.engines.openai_engine import OpenAIEngine, OpenAIOptions
from distill.verifiers.judge import (
    Judge,
    JudgeVerifier,
    judge_identity,
    judge_version,
    parse_rubric,
    parse_score,
    parse_verdict,
)
from distill.verifiers.math import VERSION as MATH_VERSION

from tests.fake_openai import FakeOpenAI


class Scripted:
    """An engine that answers from a list (an exception-free stand-in for a judge model)."""

    name = "scripted"

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def generate(self, requests):
        self.prompts += [r.messages[-1]["content"] for r in requests]
        out = []
        for _ in requests:
            reply = self.replies.pop(0)
            out.append(Completion(None, error=reply[6:]) if reply.startswith("ERROR:") else Completion(reply, "stop"))
        return out

    def close(self):
        pass


@pytest.mark.parametrize(("text", "score"), [
    ("The answer matches.\nScore: 8", 0.8),
    ("Score: 10/10", 1.0),
    ("score = 3", 0.3),
    ("<think>Score: 1 maybe</think>\nScore: 9", 0.9),  # only the text after </think> counts
    ("Score: 4\n...on reflection\nScore: 6", 0.6),  # the last one wins
    ("Score: 11", None),
    ("I would give it eight out of ten.", None),
    ("", None),
    (None, None),
])
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_parse_rubric_needs_all_three_lines():
    assert parse_rubric("Coherence: 8\nCorrectness: 6\nHelpfulness: 10") == {
        "coherence": 0.8, "correctness": 0.6, "helpfulness": 1.0}
    assert parse_rubric("Coherence: 8\nCorrectness: 6") is None
    assert parse_rubric("Coherence: 8\nCorrectness: 60\nHelpfulness: 1") is None


def test_parse_verdict():
    assert parse_verdict("reasons...\nVerdict: yes") is True
    assert parse_verdict("Verdict: No.") is False
    assert parse_verdict("yes") is None


ROW = {"category": "science", "query": "Why is the sky blue?", "reference_answer": "Rayleigh scattering",
       "response": "<think>hmm</think><answer>Because of Rayleigh scattering.</answer>"}


def test_science_judge_scores_ok_unreadable_infra_and_missing_answer():
    engine = Scripted(["Score: 7", "I like it", "ERROR:judge down"])
    v = JudgeVerifier(Judge(engine, {"m": 1}, SamplingConfig()), "reference")
    rows = [ROW, ROW, ROW, {**ROW, "response": "no tags at all"}]
    out = v.verify_many(rows)
    assert [(r.status, r.score) for r in out] == [("ok", 0.7), ("parse_error", 0.0), ("infra_error", 0.0),
                                                  ("parse_error", 0.0)]
    assert out[1].detail["reason"] == "unreadable_judge_output" and out[3].detail["reason"] == "no_answer"
    assert out[0].verifier == "judge-reference" and not out[0].passed
    assert "Rayleigh scattering" in engine.prompts[0] and "Because of Rayleigh" in engine.prompts[0]
    assert len(engine.prompts) == 3  # the row without an answer never reaches the judge


def test_quality_judge_averages_the_rubric_and_sees_the_conversation():
    engine = Scripted(["Coherence: 10\nCorrectness: 9\nHelpfulness: 8"])
    v = JudgeVerifier(Judge(engine, {"m": 1}, SamplingConfig()), "quality")
    row = {"category": "multi_turn", "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Plan my day"}], "response": "<think>x</think><answer>Wake, work.</answer>"}
    (result,) = v.verify_many([row])
    assert result.status == "ok" and result.score == pytest.approx(0.9) and result.passed
    assert "[assistant]\nHello" in engine.prompts[0] and "Wake, work." in engine.prompts[0]


def test_science_without_a_reference_falls_back_to_the_rubric():
    engine = Scripted(["Coherence: 5\nCorrectness: 5\nHelpfulness: 5"])
    judge = Judge(engine, {}, SamplingConfig())
    (result,) = JudgeVerifier(judge, "reference").verify_many([{**ROW, "reference_answer": None}])
    assert result.score == 0.5 and result.detail["rubric"] == "quality"


def test_math_and_ifeval_verdicts_are_one_batch():
    engine = Scripted(["Verdict: yes", "no verdict", "ERROR:down", "Verdict: no", "Verdict: yes"])
    judge = Judge(engine, {}, SamplingConfig())
    calls = []
    engine.generate = lambda requests, generate=engine.generate: calls.append(len(requests)) or generate(requests)
    assert judge.math_verdicts([("q", "1/2", "0.5"), ("q", "1/2", "0.7"), ("q", "1/2", "2/4")]) == [
        (1.0, {}), (None, {}), (None, {"judge_error": "down"})]
    assert judge.instruction_verdicts([("x:y", "text", {"a": 1}), ("x:z", "text", {})]) == [False, True]
    assert calls == [3, 2]
    assert "Reference answer: 1/2" in engine.prompts[0] and "(parameters: {\"a\":1})" in engine.prompts[3]


def test_version_follows_the_judge_model():
    a = judge_version({"engine": "vllm", "model": "/m/a"})
    assert a == judge_version({"engine": "vllm", "model": "/m/a"})
    assert a != judge_version({"engine": "vllm", "model": "/m/b"}) and a.startswith("1+")


def test_version_follows_the_judge_models_weights(tmp_path):
    """New weights in the same folder are a new judge: its verdicts are re-verified."""
    model = tmp_path / "judge"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 10)
    judge = TeacherConfig("j", "transformers", str(model))
    first = judge_version(judge_identity(judge))
    assert judge_version(judge_identity(judge)) == first
    (model / "model.safetensors").write_bytes(b"\0" * 11)
    assert judge_version(judge_identity(judge)) != first


def test_a_judge_behind_an_openai_endpoint():
    with FakeOpenAI(["500"], reply="Thinking it over.\nScore: 9") as server:
        engine = OpenAIEngine("judge", OpenAIOptions(base_url=server.url, backoff_s=0.01))
        judge = Judge(engine, {}, SamplingConfig(temperature=0.0, max_tokens=64))
        (result,) = JudgeVerifier(judge, "reference").verify_many([ROW])
    assert (result.status, result.score, result.passed) == ("ok", 0.9, True)
    assert len(server.seen) == 2  # the 500 was retried


def test_verifiers_route_judged_categories_only_when_a_judge_is_configured():
    from distill.config import VerifyConfig
    from distill.verifiers import Verifiers
    bare = Verifiers(VerifyConfig())
    assert bare.versions()["science"] == ("none", "0") and bare.versions()["math"] == ("math", MATH_VERSION)
    assert [c for c in CATEGORIES if bare.loads_model(c)] == []
    judged = Verifiers(VerifyConfig(judge=TeacherConfig("j", "replay", "x")))
    assert judged.versions()["science"][0] == "judge-reference" and judged.versions()["general"][0] == "judge-quality"
    assert judged.versions()["math"] == ("math", MATH_VERSION)  # the second stage is off unless math.llm_judge
    assert [c for c in CATEGORIES if judged.loads_model(c)] == ["science", "multi_turn", "general"]


def test_config_picks_the_verifier_of_a_category(tmp_path):
    from distill.config import MathVerifyConfig, VerifyConfig
    from distill.verifiers import Verifiers

    (tmp_path / "judge.jsonl").write_text('{"source": "s", "id": "x", "response": "Score: 9"}\n')
    judge = TeacherConfig("j", "replay", str(tmp_path / "judge.jsonl"))
    v = Verifiers(VerifyConfig(judge=judge, math=MathVerifyConfig(llm_judge=True),
                               verifiers={"science": "judge-quality", "general": "none", "code": "none"}))
    versions = v.versions()
    assert {c: versions[c][0] for c in CATEGORIES} == {
        "math": "math", "code": "none", "science": "judge-quality", "instruction_following": "ifeval",
        "multi_turn": "judge-quality", "general": "none"}
    assert versions["math"][1].startswith(MATH_VERSION + "+judge")
    assert v.loads_model("math") and not v.loads_model("general")
    (result,) = v.verify_rows([{"category": "code", "response": "<think>t</think><answer>x</answer>"}])
    assert (result.status, result.verifier) == ("no_verifier", "none")
    assert v.get("science") is v.get("multi_turn")  # one verifier object serves both categories


@pytest.mark.parametrize(("verifiers", "message"), [
    ({"chemistry": "math"}, r"verify\.verifiers\.chemistry: unknown category"),
    ({"general": "reward"}, r"verify\.verifiers\.general: unknown verifier 'reward' \(known: math, code, ifeval"),
    # named explicitly, a judge verifier without a judge is an error (as a default it leaves the category unverified)
    ({"science": "judge-reference"}, r"verify\.verifiers\.science: judge-reference needs verify\.judge"),
])
def test_an_unknown_category_or_verifier_is_a_config_error_naming_the_key(verifiers, message):
    from distill.config import ConfigError, load_config

    items = ", ".join(f"{k}: {v}" for k, v in verifiers.items())
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"verify.verifiers={{{items}}}"])


@pytest.mark.parametrize("score", [1.5, -0.1, float("nan")])
def test_a_score_outside_the_declared_range_is_an_infra_error_not_clamped(score, monkeypatch):
    from distill.config import VerifyConfig
    from distill.verifiers import Verifiers
    from distill.verifiers.base import VerifyResult

    v = Verifiers(VerifyConfig())
    broken = type("Broken", (), {"verify_many": lambda self, rows: [
        VerifyResult(score, "ok", "code", "1", {"passed": 3}) for _ in rows]})()
    monkeypatch.setitem(v._built, "code", broken)
    (result,) = v.verify_rows([{"category": "code", "response": "x"}])
    assert (result.status, result.score, result.verifier) == ("infra_error", 0.0, "code")
    assert result.detail["passed"] == 3 and "outside the verifier's range [0, 1]" in result.detail["reason"]
    assert repr(VerifyResult(score, "ok", "code", "1").score) == repr(score)  # a result keeps what it was given


def test_results_carry_the_configured_version_even_offline(tmp_path):
    """With the judge as math's second stage, math results say so in their version (re-verify on change)."""
    from distill.config import MathVerifyConfig, VerifyConfig
    from distill.verifiers import Verifiers

    data = tmp_path / "judge.jsonl"
    data.write_text('{"source": "s", "id": "x", "response": "Verdict: yes"}\n')
    verifiers = Verifiers(VerifyConfig(math=MathVerifyConfig(llm_judge=True),
                                       judge=TeacherConfig("j", "replay", str(data))), workers=1)
    (result,) = verifiers.verify_rows([{"category": "math", "query": "1+1?", "reference_answer": "2",
                                        "response": "<think>t</think><answer>\\boxed{2}</answer>"}])
    assert (result.status, result.score, result.verifier) == ("ok", 1.0, "math")
    assert result.verifier_version == verifiers.versions()["math"][1]
    assert result.verifier_version.startswith(MATH_VERSION + "+judge")
