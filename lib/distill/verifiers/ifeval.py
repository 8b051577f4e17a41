"""IFEval instruction checks, re-implemented offline: the 25 instruction ids of Google's IFEval benchmark.

Each check follows the original's "strict" verdict on the answer as given; `follows_loosely` is the original's
"loose" verdict (the answer, or it without its first line, its last line or both, each also with its asterisks
removed: an instruction followed by any of the eight counts). The verifier records both scores and scores by
one of them (`verify.ifeval_score`, strict by default). Two things differ from the original on purpose,
because the original needs NLTK data that is a download: sentences are counted by a regex splitter
(`split_sentences`) instead of the punkt model, and `change_case:capital_word_frequency` tokenizes with a regex
instead of `nltk.word_tokenize`. Word counting (`\\w+`) is identical to the original.

The registry `INSTRUCTIONS` maps an instruction id to `check(answer, kwargs) -> bool`. A check raises
`InvalidKwargs` where the original would have drawn a random value or raised (a missing or bad argument); the
verifier counts such an instruction, like an unknown id, as undecided: it leaves the score, and an optional
judge callable may decide it instead.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langdetect import detector_factory
from langdetect.lang_detect_exception import LangDetectException

from distill.response import answer_part
from distill.verifiers.base import INFRA_ERROR, NO_VERIFIER, OK, PARSE_ERROR, VerifyResult, failed

# 2: the verdict's detail holds the loose verdicts and both scores beside the strict ones (scores unchanged).
VERSION = "2"
LOOSE_VERSION = "+loose"  # appended when the loose score is the row's score


def version_of(loose: bool) -> str:
    """The verifier's version when the strict (or, `loose`, the loose) score is the row's score."""
    return VERSION + (LOOSE_VERSION if loose else "")

LESS_THAN, AT_LEAST = "less than", "at least"
RELATIONS = (LESS_THAN, AT_LEAST)

Check = Callable[[str, Mapping[str, Any]], bool]
# the optional judge, asked once per batch: [(instruction id, answer, kwargs)] -> [followed | None]
Judge = Callable[[Sequence[tuple[str, str, dict]]], "list[bool | None]"]


class InvalidKwargs(ValueError):
    """The kwargs of one instruction are missing or unusable, so it cannot be checked."""


class UnknownInstruction(KeyError):
    """An instruction id that is not in the registry."""


# --- kwargs -----------------------------------------------------------------------------------------------


def _get(kwargs: Mapping[str, Any], key: str) -> Any:
    # IFEval's dataset files carry every kwarg name on every instruction, with None for the unused ones.
    value = kwargs.get(key)
    if value is None:
        raise InvalidKwargs(f"missing {key}")
    return value


def _int(kwargs: Mapping[str, Any], key: str, minimum: int | None = 0) -> int:
    value = _get(kwargs, key)
    # Arrow / JSON round trips may turn 3 into 3.0 or "3"; a bool is never a count.
    if isinstance(value, bool):
        raise InvalidKwargs(f"{key} is not an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        raise InvalidKwargs(f"{key} is not an integer")
    if minimum is not None and value < minimum:
        raise InvalidKwargs(f"{key} is below {minimum}")
    return value


def _text(kwargs: Mapping[str, Any], key: str) -> str:
    value = _get(kwargs, key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidKwargs(f"{key} is not a non-empty string")
    return value.strip()


def _words(kwargs: Mapping[str, Any], key: str) -> list[str]:
    value = _get(kwargs, key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value:
        raise InvalidKwargs(f"{key} is not a non-empty list of strings")
    words = [w.strip() for w in value if isinstance(w, str) and w.strip()]
    if len(words) != len(value):
        raise InvalidKwargs(f"{key} is not a non-empty list of strings")
    return words


def _relation(kwargs: Mapping[str, Any], key: str) -> str:
    value = _get(kwargs, key)
    if value not in RELATIONS:
        raise InvalidKwargs(f"{key} must be one of {RELATIONS}")
    return value


def _compare(actual: int, relation: str, threshold: int) -> bool:
    return actual < threshold if relation == LESS_THAN else actual >= threshold


# --- text utilities ---------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")
# Hyphenated words and dotted acronyms stay one token, as they do in nltk.word_tokenize.
_CASE_TOKEN = re.compile(r"\w+(?:[-'’.]\w+)*")

_TERMINATOR = re.compile(r"[.!?…]+[\"'”’)\]*_]*(?=\s|$)")
_PREV_TOKEN = re.compile(r"(\S*)$")
_NEXT_TOKEN = re.compile(r"\s*[\"'“‘(\[*_]*(\S*)")
_DOTTED = re.compile(r"(?:[A-Za-z]{1,2}\.)+[A-Za-z]{1,2}")
# Titles that precede a name, so their period never ends a sentence.
_NEVER_END = frozenset("mr mrs ms dr prof capt col gen lt sgt rev hon mt fig figs vs cf approx".split())
# Abbreviations that often end a sentence too: they end one only when a typical sentence opener follows.
_END_IF_STARTER = frozenset("st jr sr inc ltd co corp bros".split())
_STARTERS = frozenset(
    "A An The It He She They We I This That These Those There Their Our His Her My But However In "
    "Mr Mrs Ms Dr Prof Capt Lt Wherever".split()
)


def count_words(text: str) -> int:
    """Words as IFEval counts them (nltk's RegexpTokenizer(r"\\w+"))."""
    return len(_WORD.findall(text))


def _next_word(text: str) -> str:
    return _NEXT_TOKEN.match(text).group(1).rstrip(".,;:!?\"'”’)]*_")


def _is_boundary(text: str, match: re.Match) -> bool:
    punct = match.group().rstrip("\"'”’)]*_")
    if "!" in punct or "?" in punct:
        return True
    after = text[match.end():]
    nxt = _next_word(after)
    if not nxt:
        return True  # end of text, or only punctuation follows
    if "…" in punct or len(punct) > 1:
        # An ellipsis trails off inside a sentence unless a capitalised word starts a new one.
        return nxt[0].isupper()
    before = text[: match.start()]
    prev = _PREV_TOKEN.search(before).group(1).lstrip("([{\"'“‘*_")
    low = prev.lower()
    if low in _NEVER_END or low in ("e.g", "i.e"):
        return False
    if low == "no" and nxt[0].isdigit():
        return False  # "No. 5"
    if low == "etc":
        return nxt[0].isupper()
    if low in _END_IF_STARTER or _DOTTED.fullmatch(prev) or re.fullmatch(r"[A-Z]", prev):
        # "the U.S. Army", "J. K. Rowling", "Acme Inc. announced" go on; "... the U.S. It was" ends.
        return nxt in _STARTERS
    if prev.isdigit() and not before[: len(before) - len(prev)].split("\n")[-1].strip():
        return False  # a numbered list item: "1. First step"
    return True


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` by terminal punctuation, without a trained model.

    Like punkt, line breaks alone do not end a sentence. A period ends one unless it belongs to a title
    (Mr., Dr.), e.g./i.e., a decimal or URL (no space after the period), a numbered-list marker, or an
    acronym / initial / company suffix not followed by a typical sentence opener. Segments with no letter
    or digit are dropped.
    """
    sentences, start = [], 0
    for match in _TERMINATOR.finditer(text):
        if _is_boundary(text, match):
            sentences.append(text[start : match.end()].strip())
            start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if _WORD.search(s)]


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


_LANG_FACTORY_READY = False


def detect_language(text: str) -> str:
    """langdetect's language code for `text`, deterministic (a fixed seed per call, no global state)."""
    global _LANG_FACTORY_READY
    if not _LANG_FACTORY_READY:
        detector_factory.init_factory()
        _LANG_FACTORY_READY = True
    detector = detector_factory._factory.create()
    detector.seed = 0
    detector.append(text)
    return detector.detect()


# --- the checks -------------------------------------------------------------------------------------------


def _response_language(answer: str, kwargs: Mapping[str, Any]) -> bool:
    language = _text(kwargs, "language")
    try:
        detected = detect_language(answer)
    except LangDetectException:
        return True  # the original counts undetectable text as followed
    # langdetect says zh-cn / zh-tw where an instruction would say zh.
    return detected == language or detected.split("-")[0] == language


def _number_sentences(answer: str, kwargs: Mapping[str, Any]) -> bool:
    return _compare(count_sentences(answer), _relation(kwargs, "relation"), _int(kwargs, "num_sentences"))


def _number_placeholders(answer: str, kwargs: Mapping[str, Any]) -> bool:
    return len(re.findall(r"\[.*?\]", answer)) >= _int(kwargs, "num_placeholders")


def _number_bullet_lists(answer: str, kwargs: Mapping[str, Any]) -> bool:
    wanted = _int(kwargs, "num_bullets")
    stars = re.findall(r"^\s*\*[^\*].*$", answer, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", answer, flags=re.MULTILINE)
    return len(stars) + len(dashes) == wanted


def _constrained_response(answer: str, kwargs: Mapping[str, Any]) -> bool:
    return any(option in answer.strip() for option in ("My answer is yes.", "My answer is no.", "My answer is maybe."))


def _number_highlighted_sections(answer: str, kwargs: Mapping[str, Any]) -> bool:
    wanted = _int(kwargs, "num_highlights")
    single = [h for h in re.findall(r"\*[^\n\*]*\*", answer) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", answer) if h.removeprefix("**").removesuffix("**").strip()]
    return len(single) + len(double) >= wanted


def _multiple_sections(answer: str, kwargs: Mapping[str, Any]) -> bool:
    spliter = _text(kwargs, "section_spliter")
    wanted = _int(kwargs, "num_sections")
    sections = re.split(r"\s?" + re.escape(spliter) + r"\s?\d+\s?", answer)
    return len(sections) - 1 >= wanted


def _number_paragraphs(answer: str, kwargs: Mapping[str, Any]) -> bool:
    wanted = _int(kwargs, "num_paragraphs")
    paragraphs = re.split(r"\s?\*\*\*\s?", answer)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False  # an empty paragraph between two dividers
    return count == wanted


def _postscript(answer: str, kwargs: Mapping[str, Any]) -> bool:
    marker = _text(kwargs, "postscript_marker")
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pattern, answer.lower(), flags=re.MULTILINE))


def _keywords_existence(answer: str, kwargs: Mapping[str, Any]) -> bool:
    # The original passes keywords to re.search unescaped; escaping keeps "C++" from breaking the check.
    return all(re.search(re.escape(k), answer, flags=re.IGNORECASE) for k in _words(kwargs, "keywords"))


def _keyword_frequency(answer: str, kwargs: Mapping[str, Any]) -> bool:
    keyword = _text(kwargs, "keyword")
    relation, frequency = _relation(kwargs, "relation"), _int(kwargs, "frequency")
    # Substring occurrences, as in the original: "cat" also counts inside "category".
    return _compare(len(re.findall(re.escape(keyword), answer, flags=re.IGNORECASE)), relation, frequency)


def _number_words(answer: str, kwargs: Mapping[str, Any]) -> bool:
    return _compare(count_words(answer), _relation(kwargs, "relation"), _int(kwargs, "num_words"))


def _json_format(answer: str, kwargs: Mapping[str, Any]) -> bool:
    value = (
        answer.strip()
        .removeprefix("```json")
        .removeprefix("```Json")
        .removeprefix("```JSON")
        .removeprefix("```")
        .removesuffix("```")
        .strip()
    )
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _nth_paragraph_first_word(answer: str, kwargs: Mapping[str, Any]) -> bool:
    wanted = _int(kwargs, "num_paragraphs")
    nth = _int(kwargs, "nth_paragraph", minimum=1)
    if nth > wanted:
        raise InvalidKwargs("nth_paragraph is beyond num_paragraphs")
    first_word = _text(kwargs, "first_word").lower()
    paragraphs = re.split(r"\n\n", answer)
    count = sum(1 for p in paragraphs if p.strip())
    # Indexing the raw split (empty paragraphs included) is the original's behaviour.
    if nth > count:
        return False
    paragraph = paragraphs[nth - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    found = ""
    for letter in word:
        if letter in {".", ",", "?", "!", "'", '"'}:
            break
        found += letter.lower()
    return count == wanted and found == first_word


def _forbidden_words(answer: str, kwargs: Mapping[str, Any]) -> bool:
    words = _words(kwargs, "forbidden_words")
    return not any(re.search(r"\b" + re.escape(w) + r"\b", answer, flags=re.IGNORECASE) for w in words)


def _two_responses(answer: str, kwargs: Mapping[str, Any]) -> bool:
    responses = answer.split("******")
    valid = []
    for index, response in enumerate(responses):
        if response.strip():
            valid.append(response)
        elif index not in (0, len(responses) - 1):
            return False
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def _repeat_prompt(answer: str, kwargs: Mapping[str, Any]) -> bool:
    prompt = _text(kwargs, "prompt_to_repeat")
    return answer.strip().lower().startswith(prompt.lower())


def _end_checker(answer: str, kwargs: Mapping[str, Any]) -> bool:
    end_phrase = _text(kwargs, "end_phrase").lower()
    return answer.strip().strip('"').lower().endswith(end_phrase)


def _title(answer: str, kwargs: Mapping[str, Any]) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", answer))


def _letter_frequency(answer: str, kwargs: Mapping[str, Any]) -> bool:
    letter = _text(kwargs, "letter")
    if len(letter) != 1:
        raise InvalidKwargs("letter is not a single character")
    relation, frequency = _relation(kwargs, "let_relation"), _int(kwargs, "let_frequency")
    return _compare(Counter(answer.lower())[letter.lower()], relation, frequency)


def _english_capital(answer: str, kwargs: Mapping[str, Any]) -> bool:
    if not answer.isupper():
        return False
    try:
        return detect_language(answer) == "en"
    except LangDetectException:
        return True


def _english_lowercase(answer: str, kwargs: Mapping[str, Any]) -> bool:
    if not answer.islower():
        return False
    try:
        return detect_language(answer) == "en"
    except LangDetectException:
        return True


def _no_comma(answer: str, kwargs: Mapping[str, Any]) -> bool:
    return "," not in answer


def _capital_word_frequency(answer: str, kwargs: Mapping[str, Any]) -> bool:
    relation, frequency = _relation(kwargs, "capital_relation"), _int(kwargs, "capital_frequency")
    capitals = sum(1 for token in _CASE_TOKEN.findall(answer) if token.isupper())
    return _compare(capitals, relation, frequency)


def _quotation(answer: str, kwargs: Mapping[str, Any]) -> bool:
    value = answer.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


INSTRUCTIONS: dict[str, Check] = {
    "keywords:existence": _keywords_existence,
    "keywords:frequency": _keyword_frequency,
    "keywords:forbidden_words": _forbidden_words,
    "keywords:letter_frequency": _letter_frequency,
    "language:response_language": _response_language,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_paragraphs": _number_paragraphs,
    "length_constraints:number_words": _number_words,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "detectable_content:number_placeholders": _number_placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:number_bullet_lists": _number_bullet_lists,
    "detectable_format:constrained_response": _constrained_response,
    "detectable_format:number_highlighted_sections": _number_highlighted_sections,
    "detectable_format:multiple_sections": _multiple_sections,
    "detectable_format:json_format": _json_format,
    "detectable_format:title": _title,
    "combination:two_responses": _two_responses,
    "combination:repeat_prompt": _repeat_prompt,
    "startend:end_checker": _end_checker,
    "change_case:capital_word_frequency": _capital_word_frequency,
    "change_case:english_capital": _english_capital,
    "change_case:english_lowercase": _english_lowercase,
    "punctuation:no_comma": _no_comma,
    "startend:quotation": _quotation,
}


def follows(instruction_id: str, answer: str, kwargs: Mapping[str, Any] | None = None) -> bool:
    """IFEval's strict verdict for one instruction. Raises UnknownInstruction or InvalidKwargs."""
    check = INSTRUCTIONS.get(instruction_id)
    if check is None:
        raise UnknownInstruction(instruction_id)
    kwargs = {k: v for k, v in (kwargs or {}).items() if v is not None}
    verdict = check(answer, kwargs)  # runs even on an empty answer, so bad kwargs are still reported
    # The original's strict evaluation fails every instruction on an empty response.
    return bool(answer.strip()) and bool(verdict)


def loose_variants(answer: str) -> list[str]:
    """The eight texts IFEval's loose evaluation tries: the answer, without its first line, its last line or
    both (each stripped), and each of those four with every asterisk removed (markdown emphasis)."""
    lines = answer.split("\n")
    cut = [answer, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [*cut, *(text.replace("*", "") for text in cut)]


def follows_loosely(instruction_id: str, answer: str, kwargs: Mapping[str, Any] | None = None) -> bool:
    """IFEval's loose verdict: the instruction is followed by any of `loose_variants(answer)`."""
    return any(follows(instruction_id, text, kwargs) for text in loose_variants(answer))


# --- the verifier -----------------------------------------------------------------------------------------


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _kwargs_at(kwargs_list: Any, index: int) -> dict | None:
    """The kwargs dict of instruction `index` (a dict or a JSON string of one); {} when absent, None when bad."""
    if not isinstance(kwargs_list, Sequence) or isinstance(kwargs_list, str) or index >= len(kwargs_list):
        return {}
    item = _decode(kwargs_list[index])
    if item is None:
        return {}
    if isinstance(item, Mapping):
        return {k: v for k, v in item.items() if v is not None}
    return None


class IfEvalVerifier:
    """Scores a response by the fraction of its IFEval instructions that the answer part follows.

    A row needs `response` and `constraints` = {"instruction_id_list": [...], "kwargs": [...]}, kwargs[i]
    belonging to instruction_id_list[i] (a dict, or a JSON string of one). An instruction with an unknown id
    or unusable kwargs is undecided and left out of the score. `judge`, when given, is asked about the
    undecided instructions of a whole batch at once, [(instruction_id, answer, kwargs)] -> [True / False /
    None when it cannot tell]; an exception from it makes the rows that asked infra_errors, so they are
    retried rather than scored. The detail holds the strict and the loose verdicts and scores (a judged
    instruction counts the same in both); `loose` makes the loose score the row's score.
    """

    name = "ifeval"

    def __init__(self, judge: Judge | None = None, loose: bool = False) -> None:
        self.judge = judge
        self.loose = loose
        self.version = version_of(loose)

    def verify_many(self, rows: Sequence[dict]) -> list[VerifyResult]:
        checked = [self._check(row) for row in rows]
        asks = [(r, k) for r, c in enumerate(checked) if isinstance(c, dict)
                for k, reason in enumerate(c["reasons"]) if reason is not None]
        if asks and self.judge is not None:
            try:
                opinions = self.judge([(checked[r]["ids"][k], checked[r]["answer"], checked[r]["kwargs"][k] or {})
                                       for r, k in asks])
            except Exception as exc:  # a judge outage is not a wrong answer
                for r in dict.fromkeys(r for r, _ in asks):
                    checked[r] = failed(self, INFRA_ERROR, reason=f"judge failed: {exc}"[:300],
                                        instruction_ids=checked[r]["ids"])
            else:
                for (r, k), opinion in zip(asks, opinions, strict=True):
                    if isinstance(opinion, bool):
                        c = checked[r]
                        c["strict"][k] = c["loose"][k] = opinion
                        c["reasons"][k] = None
                        c["judged"].append(c["ids"][k])
        return [c if isinstance(c, VerifyResult) else self._result(c) for c in checked]

    def _check(self, row: Mapping[str, Any]) -> VerifyResult | dict:
        """The rule verdicts of one row (a dict), or its final result when there is nothing to check."""
        constraints = _decode(row.get("constraints"))
        ids = _decode(constraints.get("instruction_id_list")) if isinstance(constraints, Mapping) else None
        if not isinstance(ids, Sequence) or isinstance(ids, str) or not ids:
            return failed(self, NO_VERIFIER, reason="no IFEval instructions in constraints")
        ids = [str(i) for i in ids]
        response = row.get("response")
        answer = answer_part(response if isinstance(response, str) else None)
        if answer is None:
            return failed(self, PARSE_ERROR, reason="no answer part in the response")

        kwargs_list = _decode(constraints.get("kwargs"))
        c: dict[str, Any] = {"ids": ids, "answer": answer, "kwargs": [], "strict": [], "loose": [], "reasons": [],
                             "judged": []}
        for index, instruction_id in enumerate(ids):
            kwargs = _kwargs_at(kwargs_list, index)
            verdict, loose_verdict, reason = None, None, None
            if kwargs is None:
                reason = "kwargs are not a dict"
            else:
                try:
                    verdict = follows(instruction_id, answer, kwargs)
                    # the answer as given is the first loose variant: only a strict miss needs the others
                    loose_verdict = verdict or follows_loosely(instruction_id, answer, kwargs)
                except UnknownInstruction:
                    reason = "unknown instruction"
                except InvalidKwargs as exc:
                    reason = f"invalid kwargs: {exc}"
                except Exception as exc:  # a bug in one check must not sink the whole batch
                    verdict = loose_verdict = None
                    reason = f"check error: {type(exc).__name__}"
            for key, value in (("kwargs", kwargs), ("strict", verdict), ("loose", loose_verdict), ("reasons", reason)):
                c[key].append(value)
        return c

    def _result(self, c: dict) -> VerifyResult:
        undecided = [(i, why) for i, why in zip(c["ids"], c["reasons"], strict=True) if why is not None]
        detail = {"followed": c["strict"], "followed_loose": c["loose"], "instruction_ids": c["ids"],
                  "undecided": [i for i, _ in undecided], "undecided_reasons": [why for _, why in undecided],
                  "judged": c["judged"]}
        strict_score, loose_score = _fraction(c["strict"]), _fraction(c["loose"])
        if strict_score is None:
            return failed(self, NO_VERIFIER, reason="no instruction could be decided", **detail)
        detail.update(strict_score=strict_score, loose_score=loose_score)
        return VerifyResult(loose_score if self.loose else strict_score, OK, self.name, self.version, detail)


def _fraction(verdicts: list[bool | None]) -> float | None:
    """The fraction of decided verdicts that are True; None when none is decided."""
    decided = [v for v in verdicts if v is not None]
    return sum(decided) / len(decided) if decided else None
