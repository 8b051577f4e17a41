"""The verifiers there are, each declared by what it is before anything is built.

    spec = REGISTRY["math"].describe(verify_cfg)     # Spec(name, version, loads_model, score_range) or None
    verifier = REGISTRY["math"].build(verify_cfg, workers, judge)

`verify.verifiers` in the config says which verifier serves which category (DEFAULT_VERIFIERS unless set);
`none` leaves a category unverified (status no_verifier). A declaration is read by the driver, which must not
load models: it stamps versions on results, finds stale verdicts by them, and verifies `loads_model`
categories in their own pass (a judge model beside the teacher's would evict it). A verifier that needs the
judge while none is configured describes itself as None: its categories are unverified, as with `none`.

Adding a verifier is one Entry here, plus the class that does the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from distill.config import VerifyConfig
    from distill.verifiers.judge import Judge

NONE, NONE_VERSION = "none", "0"

DEFAULT_VERIFIERS = {"math": "math", "code": "code", "instruction_following": "ifeval",
                     "science": "judge-reference", "multi_turn": "judge-quality", "general": "judge-quality"}


@dataclass(frozen=True)
class Spec:
    """What a verifier declares: its name and version (stamped on every verdict; a change re-verifies), whether
    it loads a model of its own, and the range its scores lie in (a score outside it is a broken check)."""

    name: str
    version: str
    loads_model: bool
    score_range: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class Entry:
    describe: Callable[[VerifyConfig], Spec | None]
    build: Callable[[VerifyConfig, int, Callable[[], Judge]], object]
    # VerifyConfig sections it cannot do without: naming it in verify.verifiers without them is a config error
    needs: tuple[str, ...] = ()


def _judge_version(cfg: VerifyConfig) -> str | None:
    from distill.verifiers.judge import judge_identity, judge_version

    return None if cfg.judge is None else judge_version(judge_identity(cfg.judge))


def _math(cfg: VerifyConfig) -> Spec:
    from distill.verifiers import math

    judge = _judge_version(cfg) if cfg.math.llm_judge else None
    return Spec("math", math.VERSION + (f"+judge{judge}" if judge else ""), loads_model=judge is not None)


def _build_math(cfg: VerifyConfig, workers: int, judge: Callable[[], Judge]):
    from distill.verifiers.math import MathVerifier

    hook = judge().math_verdicts if cfg.judge is not None and cfg.math.llm_judge else None
    return MathVerifier(workers=cfg.math.workers or workers, timeout_s=cfg.math.timeout_s, judge=hook)


def _code(cfg: VerifyConfig) -> Spec:
    from distill.verifiers import code

    return Spec("code", code.VERSION, loads_model=False)


def _build_code(cfg: VerifyConfig, workers: int, judge: Callable[[], Judge]):
    from distill.verifiers.code import CodeVerifier
    from distill.verifiers.sandbox import SandboxLimits

    c = cfg.code
    limits = SandboxLimits(cpu_s=c.cpu_s, wall_s=c.wall_s, memory_bytes=c.memory_mb * 2**20, max_procs=c.max_procs,
                           max_output_bytes=c.max_output_kb * 2**10)
    return CodeVerifier(max_tests=c.max_tests, limits=limits, workers=c.workers or workers)


def _ifeval(cfg: VerifyConfig) -> Spec:
    from distill.verifiers import ifeval

    version = ifeval.version_of(cfg.ifeval_score == "loose")
    judge = _judge_version(cfg) if cfg.ifeval_llm else None
    return Spec("ifeval", version + (f"+judge{judge}" if judge else ""), loads_model=judge is not None)


def _build_ifeval(cfg: VerifyConfig, workers: int, judge: Callable[[], Judge]):
    from distill.verifiers.ifeval import IfEvalVerifier

    hook = judge().instruction_verdicts if cfg.judge is not None and cfg.ifeval_llm else None
    return IfEvalVerifier(judge=hook, loose=cfg.ifeval_score == "loose")


def _judged(kind: str) -> Entry:
    def describe(cfg: VerifyConfig) -> Spec | None:
        version = _judge_version(cfg)
        return None if version is None else Spec(f"judge-{kind}", version, loads_model=True)

    def build(cfg: VerifyConfig, workers: int, judge: Callable[[], Judge]):
        from distill.verifiers.judge import JudgeVerifier

        return JudgeVerifier(judge(), kind)

    return Entry(describe, build, needs=("judge",))


def _reward(cfg: VerifyConfig) -> Spec | None:
    from distill.verifiers.reward import NAME, reward_version

    return None if cfg.reward_model is None else Spec(NAME, reward_version(cfg.reward_model), loads_model=True)


def _build_reward(cfg: VerifyConfig, workers: int, judge: Callable[[], Judge]):
    from distill.verifiers.reward import RewardModelVerifier

    return RewardModelVerifier(cfg.reward_model, threads=workers)


def _judge_and_reward(cfg: VerifyConfig) -> Spec | None:
    from distill.verifiers.reward import combined

    judged, reward = _judged("quality").describe(cfg), _reward(cfg)
    if judged is None or reward is None:
        return None
    return Spec(*combined(judged.name, judged.version, reward.version, cfg.reward_model.combine), loads_model=True)


def _build_judge_and_reward(cfg: VerifyConfig, workers: int, judge: Callable[[], Judge]):
    from distill.verifiers.reward import JudgeAndReward

    return JudgeAndReward(_judged("quality").build(cfg, workers, judge), _build_reward(cfg, workers, judge),
                          cfg.reward_model.combine)


REGISTRY: dict[str, Entry] = {
    "math": Entry(_math, _build_math),
    "code": Entry(_code, _build_code),
    "ifeval": Entry(_ifeval, _build_ifeval),
    "judge-reference": _judged("reference"),
    "judge-quality": _judged("quality"),
    "reward-model": Entry(_reward, _build_reward, needs=("reward_model",)),  # chat: a reward model alone ...
    "judge-quality+reward-model": Entry(_judge_and_reward, _build_judge_and_reward,  # ... or beside the judge
                                        needs=("judge", "reward_model")),
}
