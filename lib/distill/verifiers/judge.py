"""LLM judges: science (agreement with the reference), chat and general (coherence, correctness,
helpfulness), and the optional second opinion for math and for IFEval instructions rules cannot decide.

The judge is any engine (vLLM, an endpoint, transformers, replay) from the teacher's interface. Prompts
and the score parsing are versioned together (`PROMPT_VERSION`); the verifier version also carries a
short hash of the judge's model and sampling, so changing either re-verifies stored attempts. A judge
whose reply cannot be read gets status `parse_error` (never a silent 0), and an engine failure
`infra_error` (retried on the next run, never counted as a wrong answer). Reasoning judges may think
first: only the text after `</think>` is parsed.
"""

from __future__ import annotations

import re
from typing import Sequence

from distill.config import SamplingConfig, TeacherConfig
from distill.engines.base import Engine, Request
from distill.ids import canonical_json, model_identity, stable_id
from distill.response import answer_part
from distill.verifiers.base import INFRA_ERROR, OK, PARSE_ERROR, VerifyResult

PROMPT_VERSION = "1"

REFERENCE_PROMPT = """You are grading an answer to a question against a reference answer.

Question:
{question}

Reference answer:
{reference}

Candidate answer:
{answer}

How well does the candidate's final answer agree with the reference? Ignore style and length; judge only
whether the substance and the final result agree. Give a score from 0 (contradicts or misses the reference)
to 10 (fully agrees). End your reply with a line of the form
Score: <integer 0-10>"""

QUALITY_PROMPT = """You are rating an assistant's final reply in a conversation.

Conversation:
{conversation}

Assistant's reply:
{answer}

Rate the reply from 0 to 10 on each of: coherence (clear and well organised), correctness (accurate, no
false claims), helpfulness (does what the user asked). End your reply with exactly these three lines:
Coherence: <integer 0-10>
Correctness: <integer 0-10>
Helpfulness: <integer 0-10>"""

VERDICT_PROMPT = """{task}

Reply with your reasoning, then end with a line of the form
Verdict: yes
or
Verdict: no"""

MATH_TASK = """Question:
{question}

Reference answer: {reference}
Candidate answer: {answer}

Is the candidate's final answer mathematically equivalent to the reference answer?"""

SOLVE_PROMPT = """Solve the following problem. Think it through, then give only the final answer inside
\\boxed{{}} on the last line.

{question}"""

INSTRUCTION_TASK = """Instruction given to a writer: {instruction} (parameters: {kwargs})

Text the writer produced:
{answer}

Does the text follow the instruction?"""

_SCORE = re.compile(r"^\W*score\W*[:=]\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\W*$", re.I | re.M)
_RUBRIC = {name: re.compile(rf"^\W*{name}\W*[:=]\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\W*$", re.I | re.M)
           for name in ("coherence", "correctness", "helpfulness")}
_VERDICT = re.compile(r"^\W*verdict\W*[:=]\s*(yes|no)\b", re.I | re.M)


def _reply(text: str | None) -> str:
    text = text or ""
    return text.rsplit("</think>", 1)[-1] if "</think>" in text else text


def parse_score(text: str | None) -> float | None:
    """`Score: N` (0-10, the last one wins) -> N/10; None when there is none or it is out of range."""
    found = _SCORE.findall(_reply(text))
    if not found or not 0 <= float(found[-1]) <= 10:
        return None
    return float(found[-1]) / 10


def parse_rubric(text: str | None) -> dict[str, float] | None:
    """The three rubric lines -> {name: N/10}; None unless all three are there and in range."""
    reply, out = _reply(text), {}
    for name, pattern in _RUBRIC.items():
        found = pattern.findall(reply)
        if not found or not 0 <= float(found[-1]) <= 10:
            return None
        out[name] = float(found[-1]) / 10
    return out


def parse_verdict(text: str | None) -> bool | None:
    found = _VERDICT.findall(_reply(text))
    return None if not found else found[-1].lower() == "yes"


def question_text(row: dict) -> str:
    messages = row.get("messages") or [{"role": "user", "content": row.get("query") or ""}]
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def conversation_text(row: dict) -> str:
    messages = row.get("messages") or [{"role": "user", "content": row.get("query") or ""}]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages if m.get("role") != "system")


def judge_identity(judge: TeacherConfig) -> dict:
    """What a judge's verdicts depend on: its engine, its model (a folder's fingerprint, so new weights at the
    same path count as a new judge), sampling and system prompt."""
    return {"engine": judge.engine, "model": model_identity(judge.model), "sampling": vars(judge.sampling),
            "system_prompt": judge.system_prompt}


def judge_version(identity: dict) -> str:
    """The prompts' version plus a short hash of the judge (engine, model, sampling)."""
    return f"{PROMPT_VERSION}+{stable_id(canonical_json(identity))[:8]}"


class Judge:
    """One judge engine and the prompts around it. `ask` returns the raw replies (None on engine failure)."""

    def __init__(self, engine: Engine, identity: dict, sampling: SamplingConfig):
        self.engine, self.sampling = engine, sampling
        self.version = judge_version(identity)

    def ask(self, prompts: Sequence[str], keys: Sequence[str]) -> list[tuple[str | None, str | None]]:
        """[(reply, error)] per prompt. Seeds come from the keys, so re-asking gives the same reply."""
        # attempt 1: each prompt is asked once (a replayed judge's rows are numbered from 1)
        requests = [Request(key=k, messages=[{"role": "user", "content": p}], seed=int(stable_id(k)[:8], 16),
                            sampling=self.sampling, attempt=1)
                    for p, k in zip(prompts, keys, strict=True)]
        return [(c.text, c.error) for c in self.engine.generate(requests)]

    def math_verdicts(self, items: Sequence[tuple[str, str, str]]) -> list[tuple[float | None, dict]]:
        """(question, reference, answer) -> (1.0 equivalent / 0.0 not / None unreadable, detail), one batch."""
        prompts = [VERDICT_PROMPT.format(task=MATH_TASK.format(question=q, reference=r, answer=a))
                   for q, r, a in items]
        out = []
        for reply, error in self.ask(prompts, [f"math/{stable_id(p)}" for p in prompts]):
            verdict = parse_verdict(reply)
            out.append(((None if verdict is None else float(verdict)), {"judge_error": error} if error else {}))
        return out

    def solve(self, questions: Sequence[str]) -> list[str | None]:
        """Its own final answer to each math question (the last \\boxed{} of its reply; None when it gives
        none or the engine failed), one batch: the reference audit's independent opinion."""
        from distill.verifiers.math import last_boxed

        prompts = [SOLVE_PROMPT.format(question=q) for q in questions]
        replies = self.ask(prompts, [f"solve/{stable_id(p)}" for p in prompts])
        return [last_boxed(_reply(reply)) for reply, _ in replies]

    def instruction_verdicts(self, items: Sequence[tuple[str, str, dict]]) -> list[bool | None]:
        """(IFEval instruction id, answer, kwargs) -> followed / not / None unreadable, one batch."""
        prompts = [VERDICT_PROMPT.format(task=INSTRUCTION_TASK.format(
            instruction=instruction_id, kwargs=canonical_json(kwargs), answer=answer))
            for instruction_id, answer, kwargs in items]
        return [parse_verdict(reply) for reply, _ in self.ask(prompts, [f"ifeval/{stable_id(p)}" for p in prompts])]


class JudgeVerifier:
    """`kind` "reference" (science: agreement with the reference; quality rubric when there is none) or
    "quality" (chat, general: the mean of the coherence, correctness and helpfulness scores)."""

    def __init__(self, judge: Judge, kind: str):
        if kind not in ("reference", "quality"):
            raise ValueError(f"unknown judge kind {kind!r}")
        self.judge, self.kind = judge, kind
        self.name, self.version = f"judge-{kind}", judge.version

    def _prompt(self, row: dict, answer: str) -> tuple[str, str]:
        if self.kind == "reference" and row.get("reference_answer"):
            return "reference", REFERENCE_PROMPT.format(question=question_text(row),
                                                        reference=row["reference_answer"], answer=answer)
        return "quality", QUALITY_PROMPT.format(conversation=conversation_text(row), answer=answer)

    def verify_many(self, rows: Sequence[dict]) -> list[VerifyResult]:
        results: list[VerifyResult | None] = [None] * len(rows)
        asks = []
        for i, row in enumerate(rows):
            answer = answer_part(row.get("response"))
            if not answer:
                results[i] = VerifyResult(0.0, PARSE_ERROR, self.name, self.version, {"reason": "no_answer"})
            else:
                asks.append((i, *self._prompt(row, answer)))
        replies = self.judge.ask([p for _, _, p in asks], [f"{self.name}/{stable_id(p)}" for _, _, p in asks])
        for (i, rubric, _), (reply, error) in zip(asks, replies, strict=True):
            results[i] = self._result(rubric, reply, error)
        return results  # type: ignore[return-value]

    def _result(self, rubric: str, reply: str | None, error: str | None) -> VerifyResult:
        if error is not None:
            return VerifyResult(0.0, INFRA_ERROR, self.name, self.version, {"error": error[:300]})
        if rubric == "reference":
            score = parse_score(reply)
            detail = {"rubric": rubric}
        else:
            parts = parse_rubric(reply)
            score = None if parts is None else sum(parts.values()) / len(parts)
            detail = {"rubric": rubric, **(parts or {})}
        if score is None:
            return VerifyResult(0.0, PARSE_ERROR, self.name, self.version,
                                {**detail, "reason": "unreadable_judge_output", "reply_tail": (reply or "")[-200:]})
        return VerifyResult(score, OK, self.name, self.version, detail)
