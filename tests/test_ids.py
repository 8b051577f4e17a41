"""Deterministic ids: the same input gives the same id, and ids say where a row came from."""

import hashlib

from distill.ids import canonical_json, query_id, stable_id


def test_stable_id_recipe():
    # The recipe is part of the table contract: if it changes, every key in every warehouse changes.
    assert stable_id("a", "b") == hashlib.sha256(b"a\x1fb").hexdigest()[:32] == "f04cdced9736a69da6103f08a4daaf8c"
    assert stable_id("a", "b") != stable_id("ab")
    assert stable_id("a", "b") != stable_id("b", "a")


def test_query_id_uses_the_source_id_when_given():
    content = {"category": "math", "messages": [{"role": "user", "content": "1+1?"}]}
    other = {"category": "math", "messages": [{"role": "user", "content": "2+2?"}]}
    assert query_id("s", "7", content) == query_id("s", "7", other)
    assert query_id("s", "7", content) != query_id("t", "7", content)


def test_query_id_from_content_when_no_id():
    content = {"category": "math", "messages": [{"role": "user", "content": "1+1?"}]}
    reordered = {"messages": [{"content": "1+1?", "role": "user"}], "category": "math"}
    assert query_id("s", None, content) == query_id("s", None, reordered)
    assert query_id("s", None, content) != query_id("s", None, {**content, "category": "general"})


def test_canonical_json_sorts_and_keeps_unicode():
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
