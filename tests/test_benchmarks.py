"""Benchmark readers for decontamination: JSONL, Parquet and `datasets` save_to_disk folders give the
same (item_id, text) rows; text fields are found or mapped; unreadable input is a BenchmarkError naming
the config key."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distill.benchmarks import BenchmarkError, read_benchmark
from distill.config import SourceConfig

ITEMS = [{"id": "a", "question": "What is 2+2?", "answer": "4"},
         {"id": "b", "question": "Name the largest planet.", "answer": "Jupiter"}]
EXPECTED = [("a", "What is 2+2?"), ("b", "Name the largest planet.")]


def test_jsonl_parquet_and_datasets_folder_read_alike(tmp_path):
    import datasets

    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    pq.write_table(pa.Table.from_pylist(ITEMS), tmp_path / "b.parquet")
    datasets.Dataset.from_list(ITEMS).save_to_disk(str(tmp_path / "hf"))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ITEMS)}).save_to_disk(str(tmp_path / "hf_dict"))
    for path in ("b.jsonl", "b.parquet", "hf", "hf_dict"):
        assert read_benchmark(SourceConfig(name="x", path=str(tmp_path / path)), "k") == EXPECTED, path


def test_mapped_fields_and_chat_messages(tmp_path):
    rows = [{"uid": 7, "prompt_messages": [{"role": "user", "content": "Sort [3, 1, 2]."}]}]
    (tmp_path / "b.jsonl").write_text(json.dumps(rows[0]) + "\n")
    src = SourceConfig(name="x", path=str(tmp_path / "b.jsonl"), fields={"id": "uid", "text": "prompt_messages"})
    assert read_benchmark(src, "k") == [("7", "Sort [3, 1, 2].")]


@pytest.mark.parametrize("name, content, message", [
    ("b.txt", "What is 2+2?\n", "unknown format"),
    ("b.parquet", "not parquet", "cannot read benchmark"),
    ("empty.jsonl", "", "has no items"),
])
def test_unreadable_benchmark_names_the_key(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(BenchmarkError) as err:
        read_benchmark(SourceConfig(name="x", path=str(tmp_path / name)), "prepare.decontam.benchmarks.3")
    assert str(err.value).startswith("prepare.decontam.benchmarks.3.path: ") and message in str(err.value)
