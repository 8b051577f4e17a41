"""Math reference audit: does a clear majority of the teachers' answers disagree with the reference?

Public math sets carry wrong reference answers, and a wrong reference rejects every correct response (the
AM-Thinking-v1 report audited its references for this reason). Once teachers have answered a math query,
`audit` takes every attempt's final answer (the verifier's own extraction), groups the answers by math-verify
equivalence, and compares the largest group with the reference:

- `agrees`: the largest group's answer is the reference (or math-verify says they are equal);
- `no_majority`: no group holds `min_votes` attempts, `min_share` of the answers and `min_teachers`
  distinct teachers (the decision needs a clear majority, never a plurality);
- `no_answers`: no attempt has a final answer to count;
- `disagrees`: a clear majority gives another answer. Then `decide` asks a judge, when one is configured,
  for its own answer: `proposed` (a revision to the majority's answer) when it agrees with the majority,
  `disputed` when it does not; with no judge a clear majority is `proposed`.

`applied` is set by `prepare` when `prepare.reference_audit.apply` replaced the reference. Everything here is
plain Python over one query's answers; `stages.audit` runs it in Spark tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from distill.config import ReferenceAuditConfig
from distill.ids import canonical_json, stable_id
from distill.response import answer_part
from distill.verifiers.math import VERSION as MATH_VERSION
from distill.verifiers.math import extract_final_answer

VERSION = "1"  # the rules below; a change re-audits every query (see audit_key)

AGREES, NO_MAJORITY, NO_ANSWERS, DISAGREES = "agrees", "no_majority", "no_answers", "disagrees"
PROPOSED, DISPUTED, APPLIED = "proposed", "disputed", "applied"
STATUSES = (AGREES, NO_MAJORITY, NO_ANSWERS, DISAGREES, PROPOSED, DISPUTED, APPLIED)

# same(pairs) -> for each (a, b): True when math-verify finds them equal, False when not, None when it could
# not tell (a timeout, an unparsable side). The Spark stage passes the verifier's killable process pool.
Same = Callable[[Sequence[tuple[str, str]]], Sequence[bool | None]]


def audit_key(cfg: ReferenceAuditConfig, judge_version: str | None) -> str:
    """What an audit row depends on, besides the query's reference and attempts: the rules, the math
    extraction, and the judge when one is asked. `apply` is not part of it: applying re-audits nothing."""
    decisive = {"version": VERSION, "math": MATH_VERSION, "min_votes": cfg.min_votes, "min_share": cfg.min_share,
                "min_teachers": cfg.min_teachers, "judge": judge_version if cfg.ask_judge else None}
    return stable_id("reference_audit", canonical_json(decisive))[:16]


def final_answer(response: str | None) -> str | None:
    """The final answer the math verifier would compare (None when the response gives none)."""
    return extract_final_answer(answer_part(response)) if isinstance(response, str) else None


@dataclass
class Group:
    answer: str  # its most frequent spelling (the first seen among equals)
    votes: int  # attempts
    teachers: set[str]


def group_answers(answers: Sequence[tuple[str, str]], same: Same) -> list[Group]:
    """(teacher, final answer) pairs -> groups of equivalent answers, largest first (ties: first seen).
    Equal spellings are grouped without asking math-verify; each distinct spelling, most frequent first, then
    joins the first group math-verify finds it equal to, or starts a new one."""
    spellings = Counter(a.strip() for _, a in answers)
    teachers_of: dict[str, set[str]] = {}
    for teacher, a in answers:
        teachers_of.setdefault(a.strip(), set()).add(teacher)
    first_seen = {spelling: i for i, spelling in enumerate(spellings)}
    groups: list[Group] = []
    for spelling, votes in sorted(spellings.items(), key=lambda kv: (-kv[1], first_seen[kv[0]])):
        verdicts = list(same([(g.answer, spelling) for g in groups])) if groups else []
        home = next((g for g, equal in zip(groups, verdicts, strict=True) if equal), None)
        if home is None:
            groups.append(Group(spelling, votes, set(teachers_of[spelling])))
        else:
            home.votes += votes
            home.teachers |= teachers_of[spelling]
    return sorted(groups, key=lambda g: -g.votes)  # stable: ties keep first-seen order


def audit(reference: str, responses: Sequence[tuple[str, str | None]], cfg: ReferenceAuditConfig,
          same: Same) -> dict:
    """One query: its reference and its attempts' (teacher, response) -> an audit row (without ids)."""
    answers = [(t, a) for t, a in ((t, final_answer(r)) for t, r in responses) if a]
    row = {"attempts": len(responses), "answers": len(answers), "majority_answer": None, "votes": 0,
           "share": None, "teachers": 0}
    if not answers:
        return {**row, "status": NO_ANSWERS}
    top = group_answers(answers, same)[0]
    row.update(majority_answer=top.answer, votes=top.votes, share=top.votes / len(answers),
               teachers=len(top.teachers))
    if top.answer == reference.strip() or same([(reference.strip(), top.answer)])[0]:
        return {**row, "status": AGREES}
    clear = (top.votes >= cfg.min_votes and row["share"] >= cfg.min_share and len(top.teachers) >= cfg.min_teachers)
    return {**row, "status": DISAGREES if clear else NO_MAJORITY}


def decide(majority_answers: Sequence[str], judge_answers: Sequence[str | None] | None, same: Same) -> list[str]:
    """The status of queries whose clear majority disagrees with the reference: `proposed` without a judge
    (judge_answers None); with one, `proposed` only where the judge's own final answer equals the majority's."""
    if judge_answers is None:
        return [PROPOSED] * len(majority_answers)
    asked = [(m, j) for m, j in zip(majority_answers, judge_answers, strict=True) if j]
    verdicts = iter(same(asked) if asked else [])
    return [PROPOSED if j and next(verdicts) else DISPUTED for j in judge_answers]
