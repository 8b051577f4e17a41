"""Query filters for the `prepare` stage, in plain Python (no Spark).

The paper ("Not All Correct Answers Are Equal", a-m-team 2025) drops "queries with a high ratio of unusual
Unicode characters, empty or incomplete queries, queries with URLs, tables or image references". Following the
project rule *score first, decide later*, `score_query` turns a prompt into numbers (stored with the query) and
`decide` applies the thresholds of `QueryFilterConfig`, returning the first failing rule as ``filter:<rule>``.
Scoring never sees the config or the category, so changing a threshold needs no re-scoring.

What counts, and why:

- **unusual Unicode** (``n_unusual``, ``unusual_ratio`` = n_unusual / n_chars over non-space characters).
  Counted: control characters (``\\n \\t \\r`` are whitespace, so never counted), format characters (zero-width
  space, BOM, soft hyphen, bidi marks), private use, unassigned, lone surrogates, U+FFFD, box-drawing and block
  elements, combining marks with no base character or beyond the 3rd stacked on one (Zalgo text), and mojibake:
  UTF-8 read as Latin-1/cp1252, found as a lead character (``Ã Â Ð Ñ`` + 1, ``â`` + 2, ``ð`` + 3) followed by
  that many characters that UTF-8 continuation bytes turn into (U+0080-U+00BF and cp1252's ``€ ‚ … ™ œ`` etc.),
  so "Ã©" and "â€™" count every character of the sequence. Not counted: letters and digits of any script (CJK,
  Cyrillic, ...), punctuation, math symbols (∑ ≤ √ ∫ ∂), currency, other symbols (° © ™ and emoji: style, not
  corruption), accents on a letter, and ZWJ/ZWNJ between two non-space characters (Persian words, Indic
  conjuncts and emoji sequences need them).
- **incomplete** (``incomplete`` = 1, plus ``n_chars`` below ``min_chars``; ``n_chars`` = 0 is rule "empty").
  Structural signs only: an odd number of ``` fence lines; a text ending in "," or ":" (a lead-in with nothing
  after it, "Solve the following:"), except a colon ending a code line such as ``def f(x):``; a last word that
  cannot end an English sentence (the, an, and, or, but, nor, because, than; "of"/"to"/"a" are left out: "what is
  it made of", "solve for a" are complete); a final "..." or "…" right after a letter in a text with no "?" that
  does not ask to complete/continue/fill/finish it. So "1, 2, 3, ..." (a number sequence) and
  "Fill in the blank: Paris is ..." stay complete, "The proof goes as follows..." does not.
- **URL** (``n_urls``). ``http(s)://``, ``ftp://``, ``www.host.tld``, and bare hosts whose last label is a common
  TLD (com org net edu gov io co ai dev info uk de fr cn ru jp) written in lower case and followed by a "/" path,
  or ending in com/org/edu/gov. The path requirement for the others keeps code such as ``self.net = ...`` and
  ``df.info()`` out; the allow-list keeps "e.g.", "3.14" and file names like ``main.py`` out; a host right after
  "@" is an e-mail address, not a link, and is not counted.
- **tables** (``n_table_rows``). Lines that start and end with "|" and hold at least two cells, markdown separator
  lines (``|---|:--:|``), ASCII-art borders (``+----+----+``), and HTML ``<table`` and ``<tr`` tags. One such line
  is usually math (``|x| = |y|``), so the default threshold allows one. Code queries are exempt by default: their
  input/output examples are often tables, and those tables are the task, not a copy-paste leftover.
- **image references** (``n_image_refs``). Markdown ``![alt](src)``, HTML ``<img ...>``, image file names (.png
  .jpg .jpeg .gif .svg .webp .bmp) unless quoted or back-ticked (a string literal in code, "save as 'plot.png'"),
  and phrases that point at a picture the text does not carry: "see/in/from/shown in the (attached) image/figure/
  diagram/picture/...", "the figure below", "the graph shows", "attached image", "see Fig. 2". "Draw a diagram
  of the water cycle" asks for a diagram and does not count; "graph"/"chart" count only with below/above/
  attached/shows, since "in the graph" is graph theory.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

RULES = ("empty", "incomplete", "unusual_unicode", "url", "table", "image")


@dataclass
class QueryFilterConfig:
    # Rules that may drop a query; the others are still scored, so turning one on later needs no re-scoring.
    enabled: list[str] = field(default_factory=lambda: list(RULES))
    # Fewer non-space characters than this is incomplete: "2+2?" (4) is about the shortest real task; "hi", "ok",
    # "?" are not tasks.
    min_chars: int = 4
    # The paper says "high ratio": a stray BOM or one broken apostrophe in a normal query stays well under 10%;
    # text where one character in ten is junk is corrupted, not merely decorated.
    max_unusual_ratio: float = 0.1
    # One table-like line is usually math (|x| = |y|); the smallest real table is two or more (markdown needs
    # header + separator, HTML <table> + <tr>).
    max_table_rows: int = 1
    # category -> rules that do not apply to it. Code tasks carry their input/output examples as tables.
    exempt: dict[str, list[str]] = field(default_factory=lambda: {"code": ["table"]})

    def __post_init__(self):
        # A misspelt rule would silently never drop; fail instead, naming the field.
        for name, rules in [("enabled", self.enabled), *((f"exempt.{c}", r) for c, r in self.exempt.items())]:
            unknown = [r for r in rules if r not in RULES]
            if unknown:
                raise ValueError(f"{name}: unknown rule(s) {unknown}; known: {', '.join(RULES)}")


def prompt_text(messages: list[dict]) -> str:
    """The text the filters judge: system and user turns in order, joined by a blank line (assistant turns are
    the model's words, not the query's)."""
    return "\n\n".join(m["content"] for m in messages if m.get("role") in ("system", "user") and m.get("content"))


def normalize_for_dedup(text: str) -> str:
    """Key text for exact dedup: NFKC (fullwidth and compatibility forms fold to plain ones), casefold, every
    whitespace run to one space, stripped."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


# --- unusual Unicode ---------------------------------------------------------------------------------------------

_BAD_CATEGORIES = {"Cc", "Cf", "Co", "Cn", "Cs"}
_JOINERS = {"\u200c", "\u200d"}
_MAX_MARKS = 3  # Vietnamese, Thai and Indic scripts stack up to about three marks on a base
# What the UTF-8 continuation bytes 0x80-0xBF become when read as cp1252 (or Latin-1 where cp1252 has a hole).
_CONT = "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(0x80, 0xC0))
_C = f"[{re.escape(_CONT)}]"
_MOJIBAKE = re.compile(f"[ÂÃÐÑ]{_C}|â{_C}{{2}}|ð{_C}{{3}}")


def _is_junk_symbol(ch: str) -> bool:
    return "\u2500" <= ch <= "\u259f" or ch == "\ufffd"


def _count_unusual(text: str) -> int:
    flagged = {i for m in _MOJIBAKE.finditer(text) for i in range(m.start(), m.end())}
    marks = -1  # combining marks since the last base character; -1 means there is no base
    count = 0
    for i, ch in enumerate(text):
        if ch.isspace():
            marks = -1
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "M":
            marks = marks + 1 if marks >= 0 else -1
            bad = marks < 0 or marks > _MAX_MARKS
        else:
            marks = 0
            if ch in _JOINERS:
                bad = not (0 < i < len(text) - 1 and not text[i - 1].isspace() and not text[i + 1].isspace())
            else:
                bad = cat in _BAD_CATEGORIES or _is_junk_symbol(ch)
        count += bad or i in flagged
    return count


# --- incomplete --------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*```", re.M)
_CODE_COLON = re.compile(r"^(?:[ \t]+\S|\s*(?:def|class|if|elif|else|for|while|try|except|finally|with)\b)")
_DANGLING_WORD = re.compile(r"\b(?:the|an|and|or|but|nor|because|than)$", re.I)
_ELLIPSIS = re.compile(r"[^\W\d_]\s*(?:\.\.\.|…)$")
_ASKS_TO_COMPLETE = re.compile(r"\b(?:complete|continue|fill|finish)", re.I)


def _is_incomplete(text: str) -> bool:
    text = text.rstrip()
    if len(_FENCE.findall(text)) % 2:
        return True
    if text.endswith(","):
        return True
    if text.endswith(":") and not _CODE_COLON.match(text.rsplit("\n", 1)[-1]):
        return True
    if _DANGLING_WORD.search(text):
        return True
    return bool(_ELLIPSIS.search(text)) and "?" not in text and not _ASKS_TO_COMPLETE.search(text)


# --- URLs, tables, images ----------------------------------------------------------------------------------------

# Host labels may be any case, but the TLD must be lower case ("ASP.NET" is a framework, not a host).
_HOST = r"(?<![\w@.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
_URL = re.compile(
    r"(?i:\b(?:https?|ftp)://\S+)"
    r"|(?i:\bwww\.[\w-]+(?:\.[\w-]+)*\.[a-z]{2,})\S*"
    rf"|{_HOST}(?:com|org|net|edu|gov|io|co|ai|dev|info|uk|de|fr|cn|ru|jp)/\S*"
    rf"|{_HOST}(?:com|org|edu|gov)\b(?![\w(-]|\.\w)"
)

_TABLE_LINE = re.compile(
    r"^[ \t]*(?:\|(?:[^|\n]*\|){2,}"  # a pipe row: starts and ends with "|", at least two cells
    r"|\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)+\|?"  # a separator line
    r"|\+(?:[-=]{3,}\+)+)[ \t]*$",  # an ASCII-art border
    re.M,
)
_HTML_TABLE = re.compile(r"<(?:table|tr)\b", re.I)

_NOUN = r"(?:image|figure|diagram|picture|photo|screenshot|illustration)s?"
_ANY_NOUN = r"(?:image|figure|diagram|picture|photo|screenshot|illustration|graph|chart)s?"
_IMAGE = re.compile(
    r"!\[[^\]\n]*\]\([^)\n]*\)"
    r"|<img\b[^>]*>?"
    r"|(?<![\w/.-])(?:[\w-]+/)*[\w-]+\.(?:png|jpe?g|gif|svg|webp|bmp)\b(?!['\"`])"  # not a quoted literal
    rf"|\b(?:see|refer to|look at|shown in|given in|depicted in|in|from|on) (?:the|this|these) "
    rf"(?:(?:attached|following|given|above|below|provided|accompanying) )?{_NOUN}\b"
    rf"|\b{_ANY_NOUN} (?:below|above|attached|provided)\b"
    rf"|\b(?:the|this) {_ANY_NOUN} (?:shows|illustrates|depicts)\b"
    rf"|\battached {_ANY_NOUN}"
    r"|\b(?:see|refer to|in|from) (?:fig\.|figure) ?\d",
    re.I,
)


def _count_table_rows(text: str) -> int:
    return len(_TABLE_LINE.findall(text)) + len(_HTML_TABLE.findall(text))


def score_query(text: str) -> dict[str, float]:
    """Every filter signal as a float (one Delta map type for all). Category plays no part."""
    n_chars = sum(not ch.isspace() for ch in text)
    n_unusual = _count_unusual(text)
    return {
        "n_chars": float(n_chars),
        "n_unusual": float(n_unusual),
        "unusual_ratio": n_unusual / n_chars if n_chars else 0.0,
        "incomplete": float(_is_incomplete(text)) if n_chars else 0.0,
        "n_urls": float(len(_URL.findall(text))),
        "n_table_rows": float(_count_table_rows(text)),
        "n_image_refs": float(len(_IMAGE.findall(text))),
    }


def _fails(rule: str, s: dict[str, float], cfg: QueryFilterConfig) -> bool:
    if rule == "empty":
        return s["n_chars"] == 0
    if rule == "incomplete":
        return s["incomplete"] >= 1 or s["n_chars"] < cfg.min_chars
    if rule == "unusual_unicode":
        return s["unusual_ratio"] > cfg.max_unusual_ratio
    if rule == "url":
        return s["n_urls"] > 0
    if rule == "table":
        return s["n_table_rows"] > cfg.max_table_rows
    return s["n_image_refs"] > 0


def decide(scores: dict[str, float], category: str, cfg: QueryFilterConfig) -> str | None:
    """None to keep, else ``filter:<rule>`` for the first enabled, non-exempt rule (in RULES order) that fails."""
    exempt = set(cfg.exempt.get(category, ()))
    for rule in RULES:
        if rule in cfg.enabled and rule not in exempt and _fails(rule, scores, cfg):
            return f"filter:{rule}"
    return None
