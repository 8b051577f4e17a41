"""Write the bundled evaluation sets under data/sample/eval/ (deterministic; re-run after editing this file).

    .venv/bin/python scripts/make_sample_eval.py

- math.jsonl: 12 problems of our own at three levels (easy, medium, hard), plain rows {id, problem, answer, level}.
- code.jsonl: 4 problems of our own in LiveCodeBench's release row format: stdin and functional tests, the
  private tests encoded as LiveCodeBench encodes them (base64 of zlib of a pickle of a JSON string). One is
  dated before the configured window, so the window leaves it out.
- students/replay-{adaptive,flat}.jsonl: samples of two made-up students, {benchmark, id, sample, response},
  4 per math item and 2 per code item, some right and some wrong. replay-adaptive writes more on harder
  problems; replay-flat answers everything in the same short pattern (and is wrong more often).
Every text here is written for this project; none comes from a public benchmark.
"""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "data" / "sample" / "eval"

MATH = [  # id, level, problem, answer, a short derivation
    ("m-01", "easy", "What is 15% of 80?", "12", "15% of 80 is 0.15 × 80 = 12."),
    ("m-02", "easy", "A train travels 60 km in 45 minutes. What is its speed in km/h?", "80",
     "45 minutes is 0.75 h, and 60 / 0.75 = 80."),
    ("m-03", "easy", "Solve 3x + 7 = 22 for x.", "5", "3x = 15, so x = 5."),
    ("m-04", "easy", "How many edges does a cube have?", "12", "4 on top, 4 on the bottom and 4 upright: 12."),
    ("m-05", "medium", "How many positive divisors does 360 have?", "24",
     "360 = 2^3 × 3^2 × 5, so (3+1)(2+1)(1+1) = 24."),
    ("m-06", "medium", "Two fair dice are rolled. What is the probability that the sum is 8?", "\\frac{5}{36}",
     "The pairs (2,6), (3,5), (4,4), (5,3), (6,2) are 5 of 36."),
    ("m-07", "medium", "Find the sum of the interior angles of a convex octagon, in degrees.", "1080",
     "(8 - 2) × 180 = 1080."),
    ("m-08", "medium", "A rectangle has perimeter 36 and area 80. How long is its longer side?", "10",
     "The sides add to 18 and multiply to 80: 10 and 8."),
    ("m-09", "hard", "How many permutations of 1, 2, 3, 4, 5, 6 leave no number in its own place?", "265",
     "Derangements: D(6) = 6! (1 - 1 + 1/2 - 1/6 + 1/24 - 1/120 + 1/720) = 265."),
    ("m-10", "hard", "Find the remainder when 7^2024 is divided by 100.", "1",
     "7^4 = 2401 ≡ 1 (mod 100) and 2024 = 4 × 506, so the remainder is 1."),
    ("m-11", "hard", "The sequence a(1) = 1, a(n+1) = a(n) + 2n + 1. Find a(50).", "2500",
     "a(n) = n^2 by induction, so a(50) = 2500."),
    ("m-12", "hard", "In triangle ABC, AB = 13, BC = 14, CA = 15. Find the radius of its inscribed circle.", "4",
     "s = 21, area = sqrt(21 × 8 × 7 × 6) = 84, r = 84 / 21 = 4."),
]
# sample index (1..4) -> the answer given when it is wrong; missing: right
WRONG_ADAPTIVE = {"m-08": {2: "8"}, "m-09": {1: "264", 3: "720"}, "m-10": {4: "49"}, "m-12": {2: "6"}}
WRONG_FLAT = {"m-03": {3: "15"}, "m-06": {1: "\\frac{1}{6}", 2: "\\frac{1}{6}"}, "m-08": {1: "8", 4: "8"},
              "m-09": {1: "720", 2: "720", 3: "120", 4: "720"}, "m-10": {1: "49", 2: "49"},
              "m-11": {3: "2550"}, "m-12": {1: "6", 2: "7", 4: "6"}}


def encode_private(tests: list[dict]) -> str:
    """LiveCodeBench's private_test_cases encoding."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def stdin_tests(pairs) -> list[dict]:
    return [{"input": i, "output": o, "testtype": "stdin"} for i, o in pairs]


def functional_tests(pairs) -> list[dict]:
    return [{"input": "\n".join(json.dumps(a) for a in args), "output": json.dumps(out), "testtype": "functional"}
            for args, out in pairs]


CODE = [  # question_id, difficulty, contest_date, title, content, starter, metadata, public, private, right, wrong
    ("c-01", "easy", "2024-10-12T00:00:00", "Sum of two",
     "Read two integers a and b on one line and print a + b.", "", {},
     stdin_tests([("2 3\n", "5\n")]), stdin_tests([("-4 10\n", "6\n"), ("1000000 1000000\n", "2000000\n")]),
     "a, b = map(int, input().split())\nprint(a + b)", "a, b = map(int, input().split())\nprint(a * b)"),
    ("c-02", "medium", "2024-11-30T00:00:00", "Largest pair",
     "Given a list of integers nums with at least two elements, return the largest sum of two of its elements "
     "at different positions.",
     "class Solution:\n    def largestPair(self, nums: List[int]) -> int:\n        ", {"func_name": "largestPair"},
     functional_tests([(([1, 5, 3],), 8)]), functional_tests([(([-1, -2],), -3), (([4, 4, 1],), 8)]),
     "class Solution:\n    def largestPair(self, nums: List[int]) -> int:\n"
     "        a, b = sorted(nums)[-2:]\n        return a + b",
     "class Solution:\n    def largestPair(self, nums: List[int]) -> int:\n        return 2 * max(nums)"),
    ("c-03", "hard", "2025-01-18T00:00:00", "Count vowels per line",
     "The first line holds n. Each of the next n lines holds a word. Print, for each word, the number of vowels "
     "(a, e, i, o, u) in it, one per line.", "", {},
     stdin_tests([("2\nbanana\nsky\n", "3\n0\n")]), stdin_tests([("3\naeiou\nxyz\nqueue\n", "5\n0\n4\n")]),
     "n = int(input())\nfor _ in range(n):\n    print(sum(c in 'aeiou' for c in input()))",
     "n = int(input())\nfor _ in range(n):\n    print(sum(c in 'aeio' for c in input()))"),
    ("c-04", "easy", "2024-06-01T00:00:00", "Echo",  # before the window: left out
     "Read a line and print it unchanged.", "", {},
     stdin_tests([("hi\n", "hi\n")]), stdin_tests([("a b\n", "a b\n")]), "print(input())", "print(input()[::-1])"),
]
WRONG_CODE = {"replay-adaptive": {("c-03", 2)}, "replay-flat": {("c-02", 1), ("c-02", 2), ("c-03", 1)}}


def math_response(student: str, item, answer: str, sample: int) -> str:
    item_id, level, problem, _, how = item
    if student == "replay-flat":
        return (f"<think>\nLet me think step by step. First, {how.split(',')[0].lower()}. "
                f"Therefore, the answer is {answer}.\n</think>\n<answer>\n\\boxed{{{answer}}}\n</answer>")
    steps = [f"Problem: {problem}", how]
    if level in ("medium", "hard"):
        steps += ["Let me verify before answering.", f"Recomputing another way gives {answer} again."]
    if level == "hard":
        steps += ["This needs care, so I check each step once more.",
                  *[f"Step {i}: the value so far is consistent with {answer}." for i in range(1, 6 + sample)]]
    return "<think>\n" + "\n".join(steps) + f"\n</think>\n<answer>\n\\boxed{{{answer}}}\n</answer>"


def code_response(student: str, item, wrong: bool) -> str:
    code = item[10] if wrong else item[9]
    think = "I read the input and compute the result directly."
    if student == "replay-adaptive" and item[1] != "easy":
        think += ("\nEdge cases: negative numbers and repeated values; the approach handles both."
                  "\nChecked on the example.")
    return f"<think>\n{think}\n</think>\n<answer>\n```python\n{code}\n```\n</answer>"


def main() -> None:
    (OUT / "students").mkdir(parents=True, exist_ok=True)
    with open(OUT / "math.jsonl", "w") as f:
        for item_id, level, problem, answer, _ in MATH:
            f.write(json.dumps({"id": item_id, "problem": problem, "answer": answer, "level": level}) + "\n")
    with open(OUT / "code.jsonl", "w") as f:
        for qid, difficulty, date, title, content, starter, meta, public, private, *_ in CODE:
            f.write(json.dumps({"question_title": title, "question_content": content, "platform": "sample",
                                "question_id": qid, "contest_id": "sample", "contest_date": date,
                                "starter_code": starter, "difficulty": difficulty,
                                "public_test_cases": json.dumps(public), "private_test_cases": encode_private(private),
                                "metadata": json.dumps(meta)}) + "\n")
    for student, wrong_math in (("replay-adaptive", WRONG_ADAPTIVE), ("replay-flat", WRONG_FLAT)):
        with open(OUT / "students" / f"{student}.jsonl", "w") as f:
            for item in MATH:
                for sample in range(1, 5):
                    answer = wrong_math.get(item[0], {}).get(sample, item[3])
                    f.write(json.dumps({"benchmark": "sample-math", "id": item[0], "sample": sample,
                                        "response": math_response(student, item, answer, sample)}) + "\n")
            for item in CODE:
                for sample in range(1, 3):
                    wrong = (item[0], sample) in WRONG_CODE[student]
                    f.write(json.dumps({"benchmark": "sample-code", "id": item[0], "sample": sample,
                                        "response": code_response(student, item, wrong)}) + "\n")


if __name__ == "__main__":
    main()
