"""Query filters (distill.query_filters), plain Python, no Spark.

Covers: `prompt_text` (which turns are judged), `normalize_for_dedup`, the signals `score_query` computes
(whole dicts), and `decide`: both sides of every rule's threshold, false-positive guards (math symbols, CJK,
Cyrillic, "e.g.", "3.14", "main.py", "draw a diagram", number-sequence ellipsis), the code category's table
exemption, turning a rule off with `enabled`, the RULES decision order, and config validation.
"""

import pytest
from distill.query_filters import RULES, QueryFilterConfig, decide, normalize_for_dedup, prompt_text, score_query


def verdict(text: str, category: str = "general", **cfg) -> str | None:
    return decide(score_query(text), category, QueryFilterConfig(**cfg))


def signals(**changed: float) -> dict[str, float]:
    """Scores of a clean query with `changed` overridden (n_chars defaults to 20)."""
    base = {"n_chars": 20.0, "n_unusual": 0.0, "unusual_ratio": 0.0, "incomplete": 0.0, "n_urls": 0.0,
            "n_table_rows": 0.0, "n_image_refs": 0.0}
    return {**base, **changed}


# --- prompt_text and normalize_for_dedup -------------------------------------------------------------------------


def test_prompt_text_joins_system_and_user_turns_and_skips_assistant():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "See https://example.com for the answer"},
        {"role": "user", "content": "And 3+3?"},
    ]
    assert prompt_text(messages) == "Be brief.\n\nWhat is 2+2?\n\nAnd 3+3?"
    # the assistant's URL is not the query's: it does not count against it
    assert verdict(prompt_text(messages)) is None


def test_prompt_text_single_user_turn_is_its_content():
    assert prompt_text([{"role": "user", "content": "Factor 91."}]) == "Factor 91."


def test_normalize_for_dedup_nfkc_casefold_whitespace():
    assert normalize_for_dedup("  ＳＯＬＶＥ　ｘ＋１＝２\n\n\tfor  Straße ") == "solve x+1=2 for strasse"
    assert normalize_for_dedup("What is 2+2?") == normalize_for_dedup("what  IS\n2+2?")
    assert normalize_for_dedup("ﬁle ①") == "file 1"  # compatibility forms fold too


# --- score_query -------------------------------------------------------------------------------------------------


def test_scores_of_a_clean_query():
    assert score_query("What is 2+2?") == signals(n_chars=10.0)


def test_scores_of_an_empty_query():
    assert score_query(" \n\t ") == signals(n_chars=0.0)


def test_scores_count_every_signal():
    text = "Café rÃ©sumÃ©: see https://example.com\n| a | b |\n|---|---|\n![plot](p.png) and"
    assert score_query(text) == {
        "n_chars": 66.0,
        "n_unusual": 4.0,  # the two "Ã©"; "Café" is fine
        "unusual_ratio": 4 / 66,
        "incomplete": 1.0,  # ends with "and"
        "n_urls": 1.0,
        "n_table_rows": 2.0,
        "n_image_refs": 1.0,
    }


def test_scores_are_plain_floats():
    assert all(type(v) is float for v in score_query("| a | b |\nhttp://x.org ...").values())


# --- empty and incomplete ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n"])
def test_empty_is_dropped_as_empty(text):
    assert verdict(text) == "filter:empty"


def test_min_chars_both_sides():
    assert verdict("2+2?") is None  # 4 non-space chars == min_chars
    assert verdict("2+2") == "filter:incomplete"
    assert verdict("2 + 2") == "filter:incomplete"  # spaces do not count
    assert verdict("2+2?", min_chars=5) == "filter:incomplete"


@pytest.mark.parametrize(
    "text, incomplete",
    [
        ("What is 2+2?", False),
        ("Compute the following: 3*4", False),
        ("Solve the following:", True),
        ("Solve the following:\n\n", True),
        ("Given the numbers 3, 5,", True),
        ("Find the sum of the", True),
        ("Is 7 prime and", True),
        ("Which is larger, 2^10 or", True),
        ("What is it made of", False),  # a stranded preposition ends English sentences
        ("Find the value of a", False),  # "a" is a variable here
        ("Continue the sequence: 1, 2, 3, ...", False),
        ("Find the next term: 2, 4, 8, 16, …", False),
        ("Sum the series 1 + 1/2 + 1/4 + ...", False),
        ("The proof of the theorem goes as follows...", True),
        ("The proof of the theorem goes as follows …", True),
        ("Fill in the blank: The capital of France is ...", False),
        ("Why does the story end with 'and then...'?", False),
        ("What happens next? The door opened slowly...", False),  # the fragment is what is asked about
        ("```python\nprint(1)\n```\nWhy does this print 1?", False),
        ("Fix this:\n```python\nprint(1)", True),
        ("Complete this function:\ndef add(a, b):", False),  # a code line's colon is not a lead-in
        ("Complete this function:\n    for x in xs:", False),
    ],
)
def test_incomplete_signal(text, incomplete):
    assert score_query(text)["incomplete"] == float(incomplete)
    assert verdict(text) == ("filter:incomplete" if incomplete else None)


# --- unusual Unicode ---------------------------------------------------------------------------------------------


def test_unusual_ratio_both_sides():
    # 1 unusual out of 10 non-space chars is exactly the default 0.1: kept; out of 9 it is above: dropped
    assert score_query("Solve x=42\ufffd")["unusual_ratio"] == 0.1
    assert verdict("Solve x=42\ufffd") is None
    assert verdict("Solve x=4\ufffd") == "filter:unusual_unicode"
    assert verdict("Solve x=42\ufffd", max_unusual_ratio=0.09) == "filter:unusual_unicode"


@pytest.mark.parametrize(
    "text, n_unusual",
    [
        ("ab\u200bcd", 1),  # zero-width space
        ("\ufeffabcd", 1),  # BOM
        ("ab\x07cd", 1),  # control char
        ("ab\ue000cd", 1),  # private use
        ("ab\u0378cd", 1),  # unassigned
        ("ab\ud800cd", 1),  # lone surrogate
        ("ab\ufffdcd", 1),  # replacement char
        ("┌──┐ ▓▓", 6),  # box drawing and block elements
        ("rÃ©sumÃ©", 4),  # mojibake é
        ("itâ€™s", 3),  # mojibake ’
        ("Â°C", 2),  # mojibake °
        ("e\u0301\u0301\u0301\u0301\u0301", 2),  # Zalgo: marks beyond the 3rd on one base
        ("x \u0301", 1),  # a combining mark with no base
    ],
)
def test_unusual_characters_are_counted(text, n_unusual):
    assert score_query(text)["n_unusual"] == n_unusual


@pytest.mark.parametrize(
    "text",
    [
        "Evaluate ∫₀^π sin(x) dx and ∂f/∂x for f = x²y; show ∑ᵢ aᵢ ≤ √n · ‖a‖ and ∀ε>0 ∃δ.",
        "求函数 f(x) = x² 在区间 [0, 1] 上的最大值。",
        "Найдите сумму первых ста натуральных чисел.",
        "Résumé, naïve, Ångström, e\u0301te\u0301 — “quoted” ‘text’ … © ™ ° € £ ¥ §",
        "Explain this emoji: 🙂👍 and the family 👨\u200d👩\u200d👧",
        "می\u200cخواهم این معادله را حل کنم: x + 2 = 5",  # Persian needs ZWNJ inside words
        "हिन्दी में उत्तर दीजिए: २ + २ = ?",
    ],
)
def test_real_text_in_any_script_has_no_unusual_characters(text):
    assert score_query(text)["n_unusual"] == 0
    assert verdict(text) is None


# --- URLs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, n_urls",
    [
        ("Read https://example.org/page and http://x.io then ftp://files.net/a", 3),
        ("Go to www.example.com for details.", 1),
        ("Solve the problem at example.com/problems/17 please.", 1),
        ("Clone github.com/user/repo and read docs.python.org/3/", 2),
        ("Ask mit.edu about it.", 1),
        ("e.g. compute 3.14 * 2, i.e. twice pi", 0),
        ("Fix the bug in main.py and utils.rs", 0),
        ("self.net = nn.Linear(3, 4); df.info(); tf.io.read_file(p)", 0),
        ("Is ASP.NET or Node.js better?", 0),
        ("Validate an address such as john@example.com", 0),
    ],
)
def test_url_count(text, n_urls):
    assert score_query(text)["n_urls"] == n_urls


def test_url_both_sides():
    assert verdict("Summarise the article at example.net") is None  # .net without a path is not counted
    assert verdict("Summarise the article at example.net/a") == "filter:url"


# --- tables ------------------------------------------------------------------------------------------------------


MD_TABLE = "Given the table:\n| x | y |\n|---|:-:|\n| 1 | 2 |\n| 3 | 4 |\nfind y(5)."


@pytest.mark.parametrize(
    "text, n_rows",
    [
        (MD_TABLE, 4),
        ("+----+----+\n| a  | b  |\n+====+====+\n| 1  | 2  |\n+----+----+\nRead it.", 5),
        ("<table><tr><td>1</td></tr><tr><td>2</td></tr></table>", 3),
        ("Prove |a+b| <= |a| + |b| for reals.", 0),
        ("Run `cat f | grep x | wc -l` here.", 0),
    ],
)
def test_table_row_count(text, n_rows):
    assert score_query(text)["n_table_rows"] == n_rows


def test_table_both_sides():
    one = "Solve for x:\n|x| = |y|\nwith y = 2."
    assert score_query(one)["n_table_rows"] == 1
    assert verdict(one) is None
    assert verdict("Solve:\n|x| = |y|\n|y| = |2|") == "filter:table"
    assert verdict(MD_TABLE, max_table_rows=4) is None
    assert verdict(MD_TABLE, max_table_rows=3) == "filter:table"


def test_code_query_with_io_table_is_exempt_from_table_rule():
    text = "Write f(n) returning n squared.\n\n| input | output |\n|---|---|\n| 2 | 4 |\n| 3 | 9 |"
    assert verdict(text, "code") is None
    assert verdict(text, "general") == "filter:table"
    assert verdict(text, "code", exempt={}) == "filter:table"


# --- image references --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, n_refs",
    [
        ("What is shown here? ![cat](img/cat.png)", 1),
        ('Describe <img src="a.jpg" alt="x"> briefly.', 1),
        ("Describe the trend in chart.webp and scan.JPEG", 2),
        ("See the image below and count the apples.", 1),
        ("In the figure, ABCD is a square. Find its area.", 1),
        ("As shown in the diagram, find angle x.", 1),
        ("The figure shows a triangle; find its area.", 1),
        ("Using the graph above, estimate f(2).", 1),
        ("Refer to Fig. 3 for the setup.", 1),
        ("Draw a diagram of the water cycle.", 0),
        ("Explain how to draw a picture of a cat.", 0),
        ("How many edges are in the graph with degree sequence 3,3,2,2?", 0),
        ("Write code that saves the chart as 'plot.png' with plt.savefig(\"out/plot.png\").", 0),
    ],
)
def test_image_ref_count(text, n_refs):
    assert score_query(text)["n_image_refs"] == n_refs


def test_image_both_sides():
    assert verdict("Draw a diagram of the water cycle.") is None
    assert verdict("Label the diagram below.") == "filter:image"


# --- decide: enabled, order, exemptions, config ------------------------------------------------------------------


def test_enabled_turns_a_rule_off():
    text = "Summarise https://example.com/post"
    assert verdict(text) == "filter:url"
    assert verdict(text, enabled=[r for r in RULES if r != "url"]) is None
    assert verdict("", enabled=[]) is None


def test_decision_follows_rules_order():
    both = "Compare https://a.org/x with\n| a | b |\n|---|---|\n| 1 | 2 |"
    assert verdict(both) == "filter:url"  # url comes before table in RULES
    assert verdict(both, enabled=["table"]) == "filter:table"
    # a query failing every rule: switching off each reported rule in turn yields RULES in order
    everything = signals(n_chars=0.0, incomplete=1.0, unusual_ratio=1.0, n_urls=1.0, n_table_rows=9.0,
                         n_image_refs=1.0)
    seen: list[str] = []
    for _ in RULES:
        reason = decide(everything, "general", QueryFilterConfig(enabled=[r for r in RULES if r not in seen]))
        seen.append(reason.removeprefix("filter:"))
    assert tuple(seen) == RULES


def test_empty_wins_over_incomplete_and_decide_reads_only_scores():
    assert decide(signals(n_chars=0.0), "general", QueryFilterConfig()) == "filter:empty"
    assert decide(signals(n_chars=0.0), "general", QueryFilterConfig(enabled=["incomplete"])) == "filter:incomplete"
    assert decide(signals(), "math", QueryFilterConfig()) is None


def test_exemption_applies_only_to_its_category():
    table = signals(n_table_rows=3.0)
    cfg = QueryFilterConfig(exempt={"math": ["table", "url"]})
    assert decide(table, "math", cfg) is None
    assert decide(table, "code", cfg) == "filter:table"  # replacing the map drops the code default
    assert decide(signals(n_urls=1.0, n_table_rows=3.0), "math", cfg) is None


def test_default_config():
    cfg = QueryFilterConfig()
    assert cfg.enabled == list(RULES)
    assert cfg.exempt == {"code": ["table"]}
    assert RULES == ("empty", "incomplete", "unusual_unicode", "url", "table", "image")


@pytest.mark.parametrize("kwargs", [{"enabled": ["urls"]}, {"exempt": {"code": ["tables"]}}])
def test_unknown_rule_names_are_errors(kwargs):
    with pytest.raises(ValueError, match="unknown rule"):
        QueryFilterConfig(**kwargs)
