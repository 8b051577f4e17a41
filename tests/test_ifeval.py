"""The offline IFEval verifier: every instruction id's check (a passing and a failing answer each), relation
boundaries, the regex sentence splitter, language detection, kwargs decoding, undecided instructions and the
judge hook, IFEval's loose variant beside the strict one, and how a row's status and score come out of its
answer part."""

from __future__ import annotations

import json

import pytest
from distill.verifiers.base import INFRA_ERROR, NO_VERIFIER, OK, PARSE_ERROR
from distill.verifiers.ifeval import (
    INSTRUCTIONS,
    LOOSE_VERSION,
    VERSION,
    IfEvalVerifier,
    InvalidKwargs,
    UnknownInstruction,
    count_sentences,
    count_words,
    detect_language,
    follows,
    follows_loosely,
    loose_variants,
    split_sentences,
)
from langdetect import DetectorFactory

# langdetect draws random n-grams; the verifier seeds its own detectors, and this keeps any direct use stable.
DetectorFactory.seed = 0

ENGLISH = "The weather is lovely today and we are going for a long walk in the park near the river."
GERMAN = "Das Wetter ist heute sehr schön und wir gehen im Park am Fluss lange spazieren."
KOREAN = "오늘은 날씨가 아주 좋아서 우리는 강 근처 공원에서 오랫동안 산책을 할 거예요."


def wrap(answer: str, think: str = "Let me think about the constraints.") -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def row(answer_or_response: str, ids: list[str], kwargs: list | None = None, raw: bool = False) -> dict:
    response = answer_or_response if raw else wrap(answer_or_response)
    return {"response": response,
            "constraints": {"instruction_id_list": ids, "kwargs": kwargs if kwargs is not None else [{}] * len(ids)}}


# (instruction id, kwargs, answer, expected verdict): a passing and a failing answer for every id.
CASES = [
    ("keywords:existence", {"keywords": ["apple", "Pear"]}, "An APPLE and a pear.", True),
    ("keywords:existence", {"keywords": ["apple", "pear"]}, "Only an apple here.", False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "A cat met a cat.", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "One cat only.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["war"]}, "Peace and software are fine.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["war"]}, "There was a War once.", False),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"}, "Zoo zebra z.",
     True),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"}, "A zoo.", False),
    ("language:response_language", {"language": "de"}, GERMAN, True),
    ("language:response_language", {"language": "de"}, ENGLISH, False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, "One. Two.", True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, "One. Two. Three.",
     False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First part.\n***\nSecond part.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\n\n***\nSecond.", False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one two three four five", True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one two three four", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "Intro text.\n\n\"Then, more text.", True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "Intro text.\n\nAfter that, more.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at home.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\nP.S. I miss you.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body without a postscript.", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "List:\n* one\n- two", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "List:\n* one\n* two\n* three", False),
    ("detectable_format:constrained_response", {}, "Having thought it over, My answer is yes.", True),
    ("detectable_format:constrained_response", {}, "Yes, definitely.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and ** **", False),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nalpha\nSection 2\nbeta", True),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nalpha and beta", False),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, "Here is JSON: {\"a\": 1}", False),
    ("detectable_format:title", {}, "<<Poem of Joy>>\nLines follow.", True),
    ("detectable_format:title", {}, "<< >>\nNo real title.", False),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem about cats."},
     "write a poem about cats. Cats are soft.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem about cats."}, "Cats are soft.", False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done here. Any other questions?\"", True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Bye.", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "This is VERY IMPORTANT news.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "This is VERY important news.", False),
    ("change_case:english_capital", {}, ENGLISH.upper(), True),
    ("change_case:english_capital", {}, ENGLISH, False),
    ("change_case:english_lowercase", {}, ENGLISH.lower(), True),
    ("change_case:english_lowercase", {}, GERMAN.lower(), False),
    ("punctuation:no_comma", {}, "No commas at all here.", True),
    ("punctuation:no_comma", {}, "One comma, here.", False),
    ("startend:quotation", {}, '"Wrapped in quotes."', True),
    ("startend:quotation", {}, '"Opened but not closed.', False),
]


def test_cases_cover_every_instruction_with_both_verdicts():
    assert len(INSTRUCTIONS) == 25
    for instruction_id in INSTRUCTIONS:
        verdicts = {expected for iid, _, _, expected in CASES if iid == instruction_id}
        assert verdicts == {True, False}, instruction_id


@pytest.mark.parametrize(("instruction_id", "kwargs", "answer", "expected"), CASES,
                         ids=[f"{c[0]}-{'pass' if c[3] else 'fail'}" for c in CASES])
def test_instruction_verdict(instruction_id, kwargs, answer, expected):
    assert follows(instruction_id, answer, kwargs) is expected
    result = IfEvalVerifier().verify_many([row(answer, [instruction_id], [kwargs])])[0]
    assert (result.status, result.score, result.detail["followed"]) == (OK, 1.0 if expected else 0.0, [expected])


@pytest.mark.parametrize(("instruction_id", "count_kwargs", "answer_at_threshold"), [
    ("length_constraints:number_words", {"num_words": 3}, "one two three"),
    ("length_constraints:number_sentences", {"num_sentences": 2}, "One here. Two here."),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2}, "cat cat"),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2}, "q Q"),
    ("change_case:capital_word_frequency", {"capital_frequency": 2}, "AB and CD"),
])
def test_relations_at_the_boundary(instruction_id, count_kwargs, answer_at_threshold):
    relation_key = {"keywords:letter_frequency": "let_relation",
                    "change_case:capital_word_frequency": "capital_relation"}.get(instruction_id, "relation")
    # Exactly the threshold: "at least" holds, "less than" does not.
    assert follows(instruction_id, answer_at_threshold, {**count_kwargs, relation_key: "at least"}) is True
    assert follows(instruction_id, answer_at_threshold, {**count_kwargs, relation_key: "less than"}) is False


def test_word_count_matches_regexp_tokenizer():
    assert count_words("Don't stop—it's 3.5 km, über-cool!") == 10


@pytest.mark.parametrize(("text", "expected"), [
    ("Dr. Smith went to Washington. He arrived at 3.5 p.m. on Monday.",
     ["Dr. Smith went to Washington.", "He arrived at 3.5 p.m. on Monday."]),
    ("Mr. and Mrs. Jones live in the U.S. They like it, e.g. the food.",
     ["Mr. and Mrs. Jones live in the U.S.", "They like it, e.g. the food."]),
    ("She works in the U.S. Army and i.e. knows it.", ["She works in the U.S. Army and i.e. knows it."]),
    ("Apples, pears, etc. are fruit. Prices rose 2.5 percent.",
     ["Apples, pears, etc. are fruit.", "Prices rose 2.5 percent."]),
    ("Wait... what happened? I waited… Then it came!", ["Wait... what happened?", "I waited…", "Then it came!"]),
    ("J. K. Rowling wrote it. See example.com now.", ["J. K. Rowling wrote it.", "See example.com now."]),
    ('He said "hi." Then he left.', ['He said "hi."', "Then he left."]),
    ("1. First step\n2. Second step. Done", ["1. First step\n2. Second step.", "Done"]),
    ("Item No. 5 is here. Trailing", ["Item No. 5 is here.", "Trailing"]),
])
def test_sentence_splitter(text, expected):
    assert split_sentences(text) == expected
    assert count_sentences(text) == len(expected)


def test_language_detection_is_deterministic_and_distinguishes_languages():
    assert [detect_language(t) for t in (ENGLISH, GERMAN, KOREAN)] == ["en", "de", "ko"]
    assert {detect_language(GERMAN) for _ in range(5)} == {"de"}
    assert follows("language:response_language", KOREAN, {"language": "ko"}) is True
    assert follows("language:response_language", KOREAN, {"language": "en"}) is False
    # Text langdetect cannot read counts as followed, as in the original.
    assert follows("language:response_language", "12345 !!!", {"language": "en"}) is True


def test_kwargs_as_json_strings_and_none_valued_extras():
    ids = ["keywords:existence", "length_constraints:number_words"]
    kwargs = [json.dumps({"keywords": ["apple"], "num_words": None, "relation": None}),
              json.dumps({"num_words": 3, "relation": "less than", "keywords": None, "language": None})]
    result = IfEvalVerifier().verify_many([row("apple pie", ids, kwargs)])[0]
    assert (result.status, result.score, result.detail["followed"], result.detail["undecided"]) == (
        OK, 1.0, [True, True], [])
    # A whole constraints object that arrives as a JSON string decodes too.
    packed = {"response": wrap("apple pie"), "constraints": json.dumps({"instruction_id_list": ids,
                                                                        "kwargs": kwargs})}
    assert IfEvalVerifier().verify_many([packed])[0].score == 1.0


def test_numbers_round_tripped_as_float_or_string_still_count():
    assert follows("length_constraints:number_words", "a b c", {"num_words": 3.0, "relation": "at least"}) is True
    assert follows("length_constraints:number_words", "a b c", {"num_words": "4", "relation": "at least"}) is False


@pytest.mark.parametrize(("instruction_id", "kwargs"), [
    ("keywords:existence", {}),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at most"}),
    ("length_constraints:number_words", {"num_words": True, "relation": "at least"}),
    ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 1, "let_relation": "at least"}),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "x"}),
    ("combination:repeat_prompt", {"prompt_to_repeat": "  "}),
])
def test_invalid_kwargs_raise(instruction_id, kwargs):
    with pytest.raises(InvalidKwargs):
        follows(instruction_id, "some answer", kwargs)


def test_unknown_id_is_undecided_and_left_out_of_the_score():
    with pytest.raises(UnknownInstruction):
        follows("keywords:nonexistent", "x", {})
    ids = ["keywords:nonexistent", "punctuation:no_comma", "keywords:existence"]
    result = IfEvalVerifier().verify_many([row("no commas", ids, [{}, {}, {}])])[0]
    assert (result.status, result.score) == (OK, 1.0)
    assert result.detail["followed"] == [None, True, None]
    assert result.detail["undecided"] == ["keywords:nonexistent", "keywords:existence"]
    assert result.detail["undecided_reasons"] == ["unknown instruction", "invalid kwargs: missing keywords"]


def test_nothing_decidable_is_no_verifier():
    result = IfEvalVerifier().verify_many([row("text", ["made:up", "also:made_up"])])[0]
    assert (result.status, result.score, result.detail["undecided"]) == (NO_VERIFIER, 0.0,
                                                                          ["made:up", "also:made_up"])


@pytest.mark.parametrize("constraints", [None, {}, {"instruction_id_list": [], "kwargs": []}])
def test_no_constraints_is_no_verifier(constraints):
    result = IfEvalVerifier().verify_many([{"response": wrap("x"), "constraints": constraints}])[0]
    assert result.status == NO_VERIFIER
    assert result.detail["reason"]


def test_judge_decides_only_the_undecided_in_one_batch():
    calls = []

    def judge(items):
        calls.append(items)
        return [{"custom:rhymes": False, "custom:polite": True}.get(i) for i, _, _ in items]

    ids = ["custom:rhymes", "punctuation:no_comma", "custom:polite", "custom:unknowable"]
    kwargs = [{"scheme": "AABB", "unused": None}, {}, None, {}]
    result, other = IfEvalVerifier(judge=judge).verify_many([row("Kind words here", ids, kwargs),
                                                             row("Other words", ["custom:polite"])])
    assert calls == [[("custom:rhymes", "Kind words here", {"scheme": "AABB"}),
                      ("custom:polite", "Kind words here", {}),
                      ("custom:unknowable", "Kind words here", {}),
                      ("custom:polite", "Other words", {})]]
    assert result.detail["followed"] == [False, True, True, None]
    assert result.detail["judged"] == ["custom:rhymes", "custom:polite"]
    assert result.detail["undecided"] == ["custom:unknowable"]
    assert result.detail["undecided_reasons"] == ["unknown instruction"]
    assert (result.status, result.score) == (OK, pytest.approx(2 / 3))
    assert (other.status, other.score, other.detail["judged"]) == (OK, 1.0, ["custom:polite"])


def test_judge_failure_is_infra_error_for_the_rows_that_asked():
    def judge(items):
        raise RuntimeError("judge endpoint down")

    asked, decided = IfEvalVerifier(judge=judge).verify_many([row("x", ["custom:thing"]),
                                                              row("x", ["punctuation:no_comma"])])
    assert (asked.status, decided.status, decided.score) == (INFRA_ERROR, OK, 1.0)
    assert "judge endpoint down" in asked.detail["reason"]


def test_constraints_are_checked_on_the_answer_not_the_think_part():
    response = wrap("No commas here.", think="Hmm, commas, commas, and APPLE pie.")
    ids = ["punctuation:no_comma", "keywords:existence"]
    result = IfEvalVerifier().verify_many([row(response, ids, [{}, {"keywords": ["apple"]}], raw=True)])[0]
    assert (result.status, result.score, result.detail["followed"]) == (OK, 0.5, [True, False])


@pytest.mark.parametrize("response", ["Plain text without tags, no answer part.", "<think>only thinking</think>",
                                      None])
def test_no_answer_is_parse_error(response):
    result = IfEvalVerifier().verify_many([{"response": response, "constraints": {
        "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}}])[0]
    assert (result.status, result.score) == (PARSE_ERROR, 0.0)


def test_empty_answer_fails_every_instruction_as_in_strict_ifeval():
    result = IfEvalVerifier().verify_many([row("<think>t</think><answer></answer>", ["punctuation:no_comma"],
                                               raw=True)])[0]
    assert (result.status, result.score, result.detail["followed"]) == (OK, 0.0, [False])


def test_mixed_row_scores_the_fraction_followed():
    ids = ["punctuation:no_comma", "detectable_format:title", "keywords:existence", "startend:quotation"]
    kwargs = [{}, {}, {"keywords": ["joy"]}, {}]
    results = IfEvalVerifier().verify_many([
        row("<<Ode to Joy>>\nA poem, of joy.", ids, kwargs),
        row('"<<Ode>> plain"', ids, kwargs),
    ])
    assert [r.score for r in results] == [0.5, 0.75]
    assert results[0].detail["followed"] == [False, True, True, False]
    assert results[1].detail["followed"] == [True, True, False, True]
    assert not results[1].passed
    assert (results[0].verifier, results[0].verifier_version) == ("ifeval", VERSION)


# --- IFEval's loose variant -------------------------------------------------------------------------------


def test_loose_variants_are_the_originals_eight_texts():
    assert loose_variants("Sure:\n**Hi** there\nBye*") == [
        "Sure:\n**Hi** there\nBye*", "**Hi** there\nBye*", "Sure:\n**Hi** there", "**Hi** there",
        "Sure:\nHi there\nBye", "Hi there\nBye", "Sure:\nHi there", "Hi there"]
    assert loose_variants("one line") == ["one line", "", "", "", "one line", "", "", ""]


QUOTED = ("startend:quotation", {})
ENDS = ("startend:end_checker", {"end_phrase": "Any other questions?"})


# (instruction, answer, strict verdict, loose verdict): what the loose variant forgives, and what it does not
@pytest.mark.parametrize(("instruction", "answer", "strict", "loose"), [
    (QUOTED, '"All quoted."', True, True),
    (QUOTED, 'Here it is:\n"All quoted."', False, True),  # a preamble line
    (ENDS, "Done. Any other questions?\nHope this helps!", False, True),  # a sign-off line
    (QUOTED, 'Intro:\n"All quoted."\nOutro.', False, True),  # both
    (QUOTED, '**"All quoted."**', False, True),  # markdown emphasis
    (QUOTED, 'Intro:\n"Half" quoted.\nOutro.', False, False),
    (("punctuation:no_comma", {}), "First line\nsecond, with a comma\nthird line", False, False),
    # a single line has nothing left without it: the empty text follows nothing, as in strict
    (("keywords:forbidden_words", {"forbidden_words": ["war"]}), "war", False, False),
])
def test_loose_forgives_a_first_or_last_line_and_asterisks(instruction, answer, strict, loose):
    instruction_id, kwargs = instruction
    assert (follows(instruction_id, answer, kwargs), follows_loosely(instruction_id, answer, kwargs)) == (
        strict, loose)


def test_the_detail_holds_both_scores_and_the_setting_picks_the_rows_score():
    ids = ["startend:quotation", "punctuation:no_comma", "keywords:nonexistent", "custom:polite"]
    answer = 'Here it is, friend:\n"Quoted, with a comma."'
    def judge(items):
        return [{"custom:polite": True}.get(i) for i, _, _ in items]

    strict, loose = (IfEvalVerifier(judge=judge, loose=flag).verify_many(
        [row(answer, ids, [{}, {}, {}, {}])])[0] for flag in (False, True))
    detail = {"followed": [False, False, None, True], "followed_loose": [True, False, None, True],
              "instruction_ids": ids, "undecided": ["keywords:nonexistent"],
              "undecided_reasons": ["unknown instruction"], "judged": ["custom:polite"],
              "strict_score": pytest.approx(1 / 3), "loose_score": pytest.approx(2 / 3)}
    assert strict.detail == detail and loose.detail == detail
    assert (strict.status, strict.score, strict.verifier_version) == (OK, pytest.approx(1 / 3), VERSION)
    assert (loose.status, loose.score, loose.verifier_version) == (OK, pytest.approx(2 / 3), VERSION + LOOSE_VERSION)


def test_the_configured_score_is_in_the_version_so_a_change_reverifies():
    from distill.config import TeacherConfig, VerifyConfig
    from distill.verifiers import Verifiers

    def versions(**kw):
        return Verifiers(VerifyConfig(**kw)).versions()["instruction_following"]

    judge = TeacherConfig("j", "replay", "x")
    assert versions() == ("ifeval", "2")
    assert versions(ifeval_score="loose") == ("ifeval", "2+loose")
    assert versions(ifeval_score="loose", judge=judge, ifeval_llm=True)[1].startswith("2+loose+judge")
    verifiers = Verifiers(VerifyConfig(ifeval_score="loose"))
    quoted_after_a_preamble = row('Sure:\n"q"', ["startend:quotation"])
    (result,) = verifiers.verify_rows([{"category": "instruction_following", **quoted_after_a_preamble}])
    assert (result.score, result.verifier_version) == (1.0, "2+loose")
