"""The reward-model verifier on a tiny sequence-classification model built here, offline: the calibration, the
rendering (chat template + answer part), batched scores equal to one-by-one ones, cut from the left, statuses on
failure, its version, its place in the registry and config, and the judge + reward model combination."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from distill.config import ConfigError, RewardModelConfig, TeacherConfig, VerifyConfig, load_config
from distill.verifiers import Verifiers
from distill.verifiers.base import INFRA_ERROR, OK, PARSE_ERROR, VerifyResult
from distill.verifiers.reward import JudgeAndReward, RewardModelVerifier, calibrate, reward_version

from tests.conftest import build_tiny_reward_model


def chat(turns: int, answer: str) -> dict:
    messages = []
    for t in range(turns):
        messages += [{"role": "user", "content": f"Question {t}: what is {t} plus {t}?"},
                     {"role": "assistant", "content": f"It is {2 * t}."}]
    return {"category": "general", "messages": messages[:-1],
            "response": f"<think>Some thinking {turns}.</think><answer>{answer}</answer>"}


ROWS = [chat(1, "Two."), chat(3, "The sum is six, as computed above."), chat(2, "Four"),
        chat(4, "Eight, since four plus four is eight."), chat(1, "Zero, of course.")]


def rm(path: Path, **kw) -> RewardModelVerifier:
    return RewardModelVerifier(RewardModelConfig(model=str(path), **kw), threads=1)


def test_calibration_maps_raw_rewards_to_unit_scores():
    sig = RewardModelConfig(model="m", scale=2.0, offset=1.0)
    assert calibrate(1.0, sig) == 0.5
    assert calibrate(3.0, sig) == pytest.approx(1 / (1 + math.exp(-1)))
    assert (calibrate(1e6, sig), calibrate(-1e6, sig)) == (1.0, 0.0)  # no overflow at either end
    anchors = RewardModelConfig(model="m", calibration="anchors", anchors=[-2.0, 6.0])
    assert [calibrate(x, anchors) for x in (-5.0, -2.0, 2.0, 6.0, 9.0)] == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_batched_scores_equal_one_by_one_and_a_hand_computed_reward(tiny_reward_model):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    batched = rm(tiny_reward_model, batch_size=3).verify_many(ROWS)
    single = [rm(tiny_reward_model, batch_size=1).verify_many([row])[0] for row in ROWS]
    assert [r.status for r in batched] == [OK] * len(ROWS)
    for b, s in zip(batched, single, strict=True):
        assert b.detail["reward"] == pytest.approx(s.detail["reward"], abs=1e-5)
        assert (b.score, b.detail["tokens"]) == (pytest.approx(s.score, abs=1e-6), s.detail["tokens"])
    assert len({round(r.detail["reward"], 6) for r in batched}) == len(ROWS)  # the rows are told apart

    # by hand: the conversation and the answer part (not the think part) through the chat template
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).eval()
    row = ROWS[1]
    text = tokenizer.apply_chat_template([*row["messages"], {"role": "assistant",
                                                             "content": "The sum is six, as computed above."}],
                                         tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        raw = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert batched[1].detail == {"reward": pytest.approx(raw, abs=1e-5), "tokens": len(ids), "truncated": False}
    assert batched[1].score == pytest.approx(1 / (1 + math.exp(-raw)), abs=1e-6)
    assert (batched[1].verifier, batched[1].verifier_version) == ("reward-model",
                                                                 reward_version(RewardModelConfig(str(tiny_reward_model))))


def test_a_long_conversation_is_cut_from_the_left_so_the_answer_stays(tiny_reward_model):
    whole = rm(tiny_reward_model).verify_many([ROWS[3]])[0]
    cut = rm(tiny_reward_model, max_tokens=12).verify_many([ROWS[3]])[0]
    assert whole.detail["tokens"] > 12 and not whole.detail["truncated"]
    assert (cut.status, cut.detail["tokens"], cut.detail["truncated"]) == (OK, 12, True)
    assert cut.detail["reward"] != pytest.approx(whole.detail["reward"])


def test_statuses_on_failure(tiny_reward_model, tmp_path):
    no_answer = {**ROWS[0], "response": "<think>only thinking</think>"}
    bad_messages = {**ROWS[0], "messages": [{"content": "no role"}]}
    results = rm(tiny_reward_model).verify_many([no_answer, bad_messages, ROWS[0]])
    assert [r.status for r in results] == [PARSE_ERROR, PARSE_ERROR, OK]
    assert results[0].detail["reason"] == "no_answer" and results[1].detail["reason"].startswith("render: ")

    (missing,) = rm(tmp_path / "no-such-model").verify_many([ROWS[0]])
    assert missing.status == INFRA_ERROR and missing.detail["reason"].startswith("load: ")
    two = build_tiny_reward_model(tmp_path / "two-labels", num_labels=2)
    (result,) = rm(two).verify_many([ROWS[0]])
    assert result.status == INFRA_ERROR and "one output, this one has 2" in result.detail["reason"]


def test_the_version_follows_the_weights_and_the_calibration(tiny_reward_model, tmp_path):
    base = reward_version(RewardModelConfig(str(tiny_reward_model)))
    assert base == reward_version(RewardModelConfig(str(tiny_reward_model)))
    assert base != reward_version(RewardModelConfig(str(tiny_reward_model), offset=0.5))
    assert base != reward_version(RewardModelConfig(str(tiny_reward_model), calibration="anchors", anchors=[0.0, 1.0]))
    other = build_tiny_reward_model(tmp_path / "other", seed=1)
    assert reward_version(RewardModelConfig(str(other))) != reward_version(RewardModelConfig(str(
        build_tiny_reward_model(tmp_path / "same-as-base"))))


def test_config_makes_it_a_categorys_verifier(tiny_reward_model):
    cfg = load_config(None, ["verify.verifiers={general: reward-model}",
                             f"verify.reward_model={{model: {tiny_reward_model}, scale: 2.0}}"])
    v = Verifiers(cfg.verify, workers=1)
    assert v.versions()["general"] == ("reward-model", reward_version(cfg.verify.reward_model))
    assert v.loads_model("general") and v.versions()["multi_turn"] == ("none", "0")
    (result,) = v.verify_rows([ROWS[0]])
    assert (result.status, result.verifier) == (OK, "reward-model")
    assert result.score == pytest.approx(calibrate(result.detail["reward"], cfg.verify.reward_model))


@pytest.mark.parametrize(("overrides", "message"), [
    (["verify.verifiers={general: reward-model}"], r"verify\.verifiers\.general: reward-model needs verify\.reward"),
    (["verify.verifiers={general: judge-quality+reward-model}", "verify.reward_model={model: m}"],
     r"verify\.verifiers\.general: judge-quality\+reward-model needs verify\.judge"),
    (["verify.reward_model={model: m, scale: 0}"], r"verify\.reward_model\.scale: must be > 0"),
    (["verify.reward_model={model: m, calibration: anchors, anchors: [2, 1]}"], r"verify\.reward_model\.anchors"),
    (["verify.reward_model={scale: 1}"], r"verify\.reward_model\.model: give the reward model's local folder"),
])
def test_bad_reward_model_settings_are_config_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


class FixedJudge:
    name, version = "judge-quality", "1+abc"

    def __init__(self, results):
        self.results = results

    def verify_many(self, rows):
        return self.results[: len(rows)]


@pytest.mark.parametrize(("combine", "judge", "expected"), [
    ("mean", VerifyResult(0.8, OK, "judge-quality", "1"), (OK, "mean")),
    ("min", VerifyResult(0.8, OK, "judge-quality", "1"), (OK, "min")),
    ("mean", VerifyResult(0.0, PARSE_ERROR, "judge-quality", "1"), (PARSE_ERROR, None)),
    ("mean", VerifyResult(0.0, INFRA_ERROR, "judge-quality", "1"), (INFRA_ERROR, None)),
])
def test_the_tiny_reward_model_beside_the_judge(tiny_reward_model, combine, judge, expected):
    reward = rm(tiny_reward_model)
    (alone,) = reward.verify_many([ROWS[0]])
    (both,) = JudgeAndReward(FixedJudge([judge]), reward, combine).verify_many([ROWS[0]])
    status, how = expected
    want = {"mean": (0.8 + alone.score) / 2, "min": min(0.8, alone.score), None: 0.0}[how]
    assert (both.status, both.score) == (status, pytest.approx(want))
    assert both.detail["judge"]["status"] == judge.status and both.detail["reward_model"]["score"] == alone.score
    assert (both.verifier, both.verifier_version) == ("judge-quality+reward-model", f"1+abc+rm{reward.version}+"
                                                                                  f"{combine}")
    # a reward model that cannot load makes the row an infra_error whatever the judge says
    broken = RewardModelVerifier(RewardModelConfig(model="/no/such/rm"))
    (row,) = JudgeAndReward(FixedJudge([judge]), broken, combine).verify_many([ROWS[0]])
    assert row.status == INFRA_ERROR


def test_registry_names_agree_with_the_verdicts(tiny_reward_model, tmp_path):
    (tmp_path / "judge.jsonl").write_text('{"source": "s", "id": "x", "response": "Score: 9"}\n')
    cfg = VerifyConfig(judge=TeacherConfig("j", "replay", str(tmp_path / "judge.jsonl")),
                       reward_model=RewardModelConfig(str(tiny_reward_model)),
                       verifiers={"general": "judge-quality+reward-model"})
    v = Verifiers(cfg, workers=1)
    name, version = v.versions()["general"]
    assert name == "judge-quality+reward-model" and v.loads_model("general")
    built = v.get("general")
    assert (built.name, built.version) == (name, version)


def test_distill_verify_scores_chat_rows_with_the_reward_model(tiny_reward_model, tmp_path):
    """The offline `distill verify` command, configured with the reward model for general chat: each row's result
    is the verifier's own verdict on it (the same score as calling it directly), in input order."""
    import json

    from tests.conftest import run_cli

    src, dst = tmp_path / "rows.jsonl", tmp_path / "results.jsonl"
    src.write_text("".join(json.dumps({"id": f"g{i}", **row}) + "\n" for i, row in enumerate(ROWS)))
    reward = f"verify.reward_model={{model: {tiny_reward_model}, scale: 2.0}}"
    assert run_cli("verify", "--input", str(src), "--output", str(dst), "--set", "verify.verifiers={general: "
                   "reward-model}", "--set", reward, "--workers", "1") == 0
    got = [json.loads(line) for line in dst.read_text().splitlines()]
    want = rm(tiny_reward_model, scale=2.0).verify_many(ROWS)
    assert [(r["id"], r["status"], r["verifier"]) for r in got] == [(f"g{i}", OK, "reward-model")
                                                                      for i in range(len(ROWS))]
    assert [r["score"] for r in got] == pytest.approx([w.score for w in want], abs=1e-5)
