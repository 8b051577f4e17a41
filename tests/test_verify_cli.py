"""`distill verify --input F.jsonl --output G.jsonl` (no Spark): a mixed file of hundreds of rows, with
malformed lines among them, gives exactly one result line per input line, in order, each with the
result format of DESIGN.md; malformed lines get parse_error with the reason, and the run goes on."""

from __future__ import annotations

import json

from tests.conftest import run_subprocess, venv_bin

CODE_TESTS = {"language": "python", "tests": [{"type": "stdio", "input": "3\n", "output": "9\n"},
                                              {"type": "assert", "code": "assert square(4) == 16"}]}


def answer(text):
    return f"<think>reasoning</think><answer>{text}</answer>"


def rows():
    """(input line, expected (status, score) or None for 'any ok score', expected id)."""
    out = []
    for i in range(60):
        out.append((json.dumps({"id": f"m{i}", "category": "math", "query": f"What is {i} + {i}?",
                                "reference_answer": str(2 * i), "response": answer(f"\\boxed{{{2 * i}}}")}),
                    ("ok", 1.0), f"m{i}"))
        out.append((json.dumps({"id": f"w{i}", "category": "math", "query": f"What is {i} * 3?",
                                "reference_answer": str(3 * i), "response": answer(f"\\boxed{{{3 * i + 1}}}")}),
                    ("ok", 0.0), f"w{i}"))
    for i in range(20):
        body = ("import sys\n\ndef square(x):\n    return x * x\n\ndata = sys.stdin.read().split()\n"
                "if data:\n    print(square(int(data[0])))")
        wrong = body.replace("x * x", "x + x")
        out.append((json.dumps({"id": f"c{i}", "category": "code", "query": "square", "test_cases": CODE_TESTS,
                                "response": answer(f"```python\n{body if i % 2 == 0 else wrong}\n```")}),
                    ("ok", 1.0 if i % 2 == 0 else 0.0), f"c{i}"))
    for i in range(60):
        text = "A calm sea" if i % 2 == 0 else "A calm, quiet sea"
        out.append((json.dumps({"id": f"i{i}", "category": "instruction_following", "query": "No commas.",
                                "constraints": {"instruction_id_list": ["punctuation:no_comma",
                                                                        "change_case:english_lowercase"],
                                                "kwargs": [{}, {}]},
                                "response": answer(text)}),
                    ("ok", 0.5 if i % 2 == 0 else 0.0), f"i{i}"))
    for i in range(40):
        out.append((json.dumps({"id": f"g{i}", "category": "general", "query": "Tell me about owls.",
                                "response": answer("Owls hunt at night.")}), ("no_verifier", 0.0), f"g{i}"))
    for i in range(20):
        out.append((json.dumps({"id": f"n{i}", "category": "math", "query": "2+2?", "reference_answer": "4",
                                "response": "no tags, no answer"}), ("parse_error", 0.0), f"n{i}"))
    bad = [
        ("{not json", None), ("[1, 2]", None), ("", None),
        (json.dumps({"id": "nr", "category": "math", "query": "q"}), "nr"),
        (json.dumps({"id": "uc", "category": "poetry", "query": "q", "response": "r"}), "uc"),
        (json.dumps({"id": "rt", "category": "math", "query": "q", "response": 42}), "rt"),
    ]
    for i, (line, rid) in enumerate(bad * 5):
        out.insert(7 + 37 * i, (line, ("parse_error", 0.0), rid))
    return out


def test_verify_cli_gives_one_result_per_line_and_survives_bad_rows(tmp_path):
    cases = rows()
    src, dst = tmp_path / "rows.jsonl", tmp_path / "results.jsonl"
    src.write_text("".join(line + "\n" for line, _, _ in cases))
    done = run_subprocess([venv_bin("distill"), "verify", "--input", str(src), "--output", str(dst)], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len(cases) == 290 and len(results) == len(cases)
    for (line, (status, score), rid), result in zip(cases, results, strict=True):
        assert set(result) == {"id", "score", "passed", "status", "verifier", "verifier_version", "detail"}
        assert (result["id"], result["status"], result["score"]) == (rid, status, score), line[:80]
        assert result["passed"] == (status == "ok" and score >= 0.9)
    reasons = [r["detail"].get("reason") for r in results if r["verifier"] == "none" and r["status"] == "parse_error"]
    assert set(reasons) == {"invalid_json", "not_an_object", "empty_line", "missing_response", "unknown_category",
                            "invalid_response"}
    assert "verified 290 rows" in done.stderr


def test_verify_cli_missing_input_is_a_usage_error(tmp_path):
    done = run_subprocess([venv_bin("distill"), "verify", "--input", str(tmp_path / "nope.jsonl"), "--output",
                           str(tmp_path / "out.jsonl")], timeout=120)
    assert done.returncode == 2 and "cannot read --input" in done.stderr
