"""A reward model as a verifier: a local sequence-classification model scores the conversation plus the answer.

The a-m-team verified the chat part of its distilled data with a reward model, beside an LLM judge. Here:
- the model (one output: the reward) is loaded once per Python worker with transformers and kept there;
- each row is the conversation rendered with the model's chat template plus the response's answer part (the
  think part is not what the reward model was trained to score), cut to `max_tokens` from the left so the
  answer stays whole;
- rows go through in length-sorted, right-padded batches;
- the raw reward is mapped to [0, 1] by the configured calibration (RewardModelConfig).

`JudgeAndReward` (verifier `judge-quality+reward-model`) makes the model a second opinion beside the LLM
judge: both must give a score, combined by `combine` (mean or min); when either cannot, the row takes that
status (an infra_error is retried).
The version carries the model folder's fingerprint and the calibration: a change re-verifies, nothing is
generated again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from distill.config import RewardModelConfig
from distill.ids import canonical_json, model_identity, stable_id
from distill.response import answer_part
from distill.verifiers.base import INFRA_ERROR, NO_VERIFIER, OK, PARSE_ERROR, TIMEOUT, VerifyResult, failed

VERSION = "1"
NAME = "reward-model"

_MODELS: dict[tuple, Any] = {}  # (path, device, dtype) -> (tokenizer, model): one load per Python worker


def reward_version(cfg: RewardModelConfig) -> str:
    """The verifier's version: this code's, the model's fingerprint and the calibration."""
    identity = {"model": model_identity(cfg.model), "calibration": cfg.calibration, "max_tokens": cfg.max_tokens,
                **({"scale": cfg.scale, "offset": cfg.offset} if cfg.calibration == "sigmoid"
                   else {"anchors": list(cfg.anchors)})}
    return f"{VERSION}+{stable_id(canonical_json(identity))[:8]}"


def combined(judge_name: str, judge_version: str, reward_version: str, combine: str) -> tuple[str, str]:
    """The name and version of the judge with the reward model beside it (JudgeAndReward)."""
    return f"{judge_name}+{NAME}", f"{judge_version}+rm{reward_version}+{combine}"


def calibrate(raw: float, cfg: RewardModelConfig) -> float:
    """The raw reward as a score in [0, 1]."""
    if cfg.calibration == "anchors":
        low, high = cfg.anchors
        return min(1.0, max(0.0, (raw - low) / (high - low)))
    z = (raw - cfg.offset) / cfg.scale
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))  # no overflow either way


def _load(cfg: RewardModelConfig, threads: int):
    key = (cfg.model, cfg.device, cfg.dtype)
    if key not in _MODELS:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        model = AutoModelForSequenceClassification.from_pretrained(cfg.model, dtype=dtype).to(cfg.device).eval()
        if model.config.num_labels != 1:
            raise ValueError(f"{cfg.model}: a reward model has one output, this one has {model.config.num_labels}")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError(f"{cfg.model}: the tokenizer names neither a pad nor an eos token")
        model.config.pad_token_id = pad  # the model finds each row's last real token by it
        _MODELS.clear()  # one reward model per worker at a time
        _MODELS[key] = (tokenizer, model)
    return _MODELS[key]


def _conversation(row: dict) -> list[dict]:
    messages = row.get("messages") or [{"role": "user", "content": row.get("query") or ""}]
    return [{"role": m["role"], "content": m["content"]} for m in messages]


class RewardModelVerifier:
    """Scores rows with `cfg`'s reward model; see the module docstring."""

    name = NAME

    def __init__(self, cfg: RewardModelConfig, threads: int = 0):
        self.cfg, self.threads = cfg, threads
        self.version = reward_version(cfg)

    def verify_many(self, rows: Sequence[dict]) -> list[VerifyResult]:
        results: list[VerifyResult | None] = [None] * len(rows)
        try:
            tokenizer, model = _load(self.cfg, self.threads)
        except Exception as exc:  # a model that cannot load fails these rows for now; they are verified again
            return [failed(self, INFRA_ERROR, reason=f"load: {type(exc).__name__}: {exc}"[:300]) for _ in rows]
        todo: list[tuple[int, list[int], bool]] = []
        for i, row in enumerate(rows):
            response = row.get("response")
            answer = answer_part(response if isinstance(response, str) else None)
            if not answer:
                results[i] = failed(self, PARSE_ERROR, reason="no_answer")
                continue
            try:
                text = tokenizer.apply_chat_template(
                    [*_conversation(row), {"role": "assistant", "content": answer}], tokenize=False)
                ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            except Exception as exc:  # a malformed conversation fails its own row only
                results[i] = failed(self, PARSE_ERROR, reason=f"render: {type(exc).__name__}: {exc}"[:300])
                continue
            todo.append((i, ids[-self.cfg.max_tokens:], len(ids) > self.cfg.max_tokens))
        todo.sort(key=lambda t: -len(t[1]))  # similar lengths share a batch: less padding
        for b in range(0, len(todo), self.cfg.batch_size):
            chunk = todo[b : b + self.cfg.batch_size]
            try:
                raws = self._rewards(model, [ids for _, ids, _ in chunk])
            except Exception as exc:  # the batch fails as a whole: retried on the next run
                raws = [f"{type(exc).__name__}: {exc}"[:300]] * len(chunk)
            for (i, ids, truncated), raw in zip(chunk, raws, strict=True):
                results[i] = self._result(raw, len(ids), truncated)
        return results  # type: ignore[return-value]

    def _rewards(self, model, batch: list[list[int]]) -> list[float]:
        import torch

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), model.config.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # right padding: real tokens keep positions 0..len-1
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits
        return logits[:, 0].double().tolist()

    def _result(self, raw: float | str, tokens: int, truncated: bool) -> VerifyResult:
        detail = {"tokens": tokens, "truncated": truncated}
        if isinstance(raw, str):
            return failed(self, INFRA_ERROR, reason=raw, **detail)
        if not math.isfinite(raw):
            return failed(self, INFRA_ERROR, reason=f"the reward is not finite: {raw!r}", **detail)
        return VerifyResult(calibrate(raw, self.cfg), OK, self.name, self.version, {"reward": raw, **detail})


# statuses from the one that most needs another look (an infra_error is retried) to the least
_WORST_FIRST = (INFRA_ERROR, TIMEOUT, PARSE_ERROR, NO_VERIFIER, OK)


class JudgeAndReward:
    """The LLM judge and the reward model on the same rows; one verdict by `combine` (mean or min)."""

    def __init__(self, judge, reward: RewardModelVerifier, combine: str):
        self.judge, self.reward, self.combine = judge, reward, combine
        self.name, self.version = combined(judge.name, judge.version, reward.version, combine)

    def verify_many(self, rows: Sequence[dict]) -> list[VerifyResult]:
        out = []
        for j, r in zip(self.judge.verify_many(rows), self.reward.verify_many(rows), strict=True):
            detail = {"judge": {"score": j.score, "status": j.status, **j.detail},
                      "reward_model": {"score": r.score, "status": r.status, **r.detail}, "combine": self.combine}
            if j.status == OK and r.status == OK:
                score = min(j.score, r.score) if self.combine == "min" else (j.score + r.score) / 2
                out.append(VerifyResult(score, OK, self.name, self.version, detail))
            else:
                status = min((j.status, r.status), key=_WORST_FIRST.index)
                out.append(VerifyResult(0.0, status, self.name, self.version, detail))
        return out
