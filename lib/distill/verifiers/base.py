"""What every verifier returns, and the statuses that tell a wrong answer from a broken check.

A verifier is plain Python: `verify_many(rows)` takes verify rows (a normalized query row plus
`response`) and returns one `VerifyResult` per row, in order. It never raises for a bad row; a row it
cannot judge gets a status that says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

PASS_SCORE = 0.9  # the paper's acceptance bar: regenerate until verify_score >= 0.9

OK = "ok"  # the score is meaningful
PARSE_ERROR = "parse_error"  # no answer / code found, or a judge's output was unreadable
TIMEOUT = "timeout"  # the check itself ran out of time (not the same as a wrong answer)
INFRA_ERROR = "infra_error"  # a sandbox or engine failure: retried, never counted as wrong
NO_VERIFIER = "no_verifier"  # nothing is configured to judge this category
STATUSES = (OK, PARSE_ERROR, TIMEOUT, INFRA_ERROR, NO_VERIFIER)


@dataclass
class VerifyResult:
    score: float
    status: str
    verifier: str
    verifier_version: str
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown verify status {self.status!r}")
        # never clamped: a score outside the verifier's declared range is a broken check (Verifiers.verify_rows)
        self.score = float(self.score)

    @property
    def passed(self) -> bool:
        return self.status == OK and self.score >= PASS_SCORE

    def to_dict(self, row_id: str | None = None) -> dict:
        """The verify result line of DESIGN.md."""
        return {"id": row_id, "score": self.score, "passed": self.passed, "status": self.status,
                "verifier": self.verifier, "verifier_version": self.verifier_version, "detail": self.detail}


class Verifier(Protocol):
    name: str
    version: str

    def verify_many(self, rows: Sequence[dict]) -> list[VerifyResult]: ...


def failed(verifier: Verifier, status: str, **detail: Any) -> VerifyResult:
    """A result with score 0 whose status says why there is no real score."""
    return VerifyResult(0.0, status, verifier.name, verifier.version, detail)
