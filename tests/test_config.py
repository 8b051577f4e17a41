"""Config: the shipped YAML files load; every kind of mistake is an error that names the key."""

from __future__ import annotations

import pytest
from distill.config import Config, ConfigError, SourceConfig, load_config

from tests.conftest import ROOT


def test_shipped_configs_load():
    local = load_config(ROOT / "conf/local.yaml")
    assert local.warehouse == "./warehouse"
    assert local.spark.master == "local[*]"
    assert [s.name for s in local.ingest.sources] == ["sample"]
    assert [t.engine for t in local.teachers] == ["replay", "replay", "replay"]
    cluster = load_config(ROOT / "conf/cluster.example.yaml")
    assert {t.engine for t in cluster.teachers} >= {"vllm", "openai"}
    assert cluster.prepare.embedder.path.endswith("bge-m3")
    assert [b.name for b in local.prepare.decontam.benchmarks] == ["sample-bench"]
    assert cluster.score.perplexity.engine == "vllm" and cluster.score.student_tokenizer is not None
    assert local.score.perplexity.build_tiny_from and local.score.perplexity.model is not None
    assert (local.curate.corpus_max_count, local.curate.repeat_max_count) == (20, 20)
    assert (local.train.launcher, local.train.num_proc, local.train.student) == ("horovod", 2,
                                                                                  local.score.perplexity.model)
    assert [st.teachers for st in local.train.students] == [["teacher-a"], ["teacher-b"], ["teacher-c"]]
    e = cluster.evaluate
    assert [(b.name, b.samples) for b in e.benchmarks] == [("aime2024", 64), ("aime2025", 64), ("math500", 4),
                                                          ("livecodebench", 16)]
    assert (e.sampling.temperature, e.sampling.top_p, e.sampling.max_tokens) == (0.6, 0.95, 49152)
    assert (e.benchmarks[3].date_from, e.benchmarks[3].date_to) == ("2024-10-01", "2025-02-28")
    assert {s.train for s in e.students} == {s.name for s in cluster.train.students}
    assert {s.name for s in local.evaluate.students} >= {"tiny-a", "replay-adaptive"}
    t = cluster.train
    assert (t.launcher, t.lr, t.global_batch, t.epochs, t.max_len, t.bf16) == ("torch_distributor", 8e-5, 64, 2,
                                                                               32768, True)


def test_train_keys_are_checked():
    with pytest.raises(ConfigError, match=r"train\.global_batch: 6 is not a multiple of num_proc x micro_batch"):
        load_config(None, ["train.global_batch=6", "train.num_proc=4"])
    with pytest.raises(ConfigError, match=r"train\.launcher: must be one of horovod, torch_distributor"):
        load_config(None, ["train.launcher=deepspeed"])
    with pytest.raises(ConfigError, match=r"train\.warmup_ratio: must be in \[0, 1\)"):
        load_config(None, ["train.warmup_ratio=1.5"])


def test_evaluate_keys_are_checked():
    with pytest.raises(ConfigError, match=r"evaluate\.students\.0\.train: give either `train`"):
        load_config(None, ["evaluate.students=[{name: s, engine: vllm}]"])
    with pytest.raises(ConfigError, match=r"evaluate\.benchmarks\.0\.samples: must be >= 1"):
        load_config(None, ["evaluate.benchmarks=[{name: b, path: p, kind: math, samples: 0}]"])
    with pytest.raises(ConfigError, match=r"evaluate\.benchmarks\.0\.kind: must be one of math, code"):
        load_config(None, ["evaluate.benchmarks=[{name: b, path: p, kind: chat}]"])
    with pytest.raises(ConfigError, match=r"train\.students\.1\.name: 'a' is used twice"):
        load_config(None, ["train.students=[{name: a, teachers: [t]}, {name: a, teachers: [u]}]"])


@pytest.mark.parametrize("variant, message", [
    ("{name: v, teachers: [teacher-z]}",
     r"experiments\.0\.variants\.0\.teachers\.0: unknown teacher 'teacher-z' \(configured: teacher-a, teacher-b"),
    ("{name: v, teachers: [teacher-a], threshold: 1.5}", r"experiments\.0\.variants\.0\.threshold: 1\.5 is outside"),
    ("{name: v, teachers: [teacher-a], threshold: -0.1}", r"experiments\.0\.variants\.0\.threshold: -0\.1 is outside"),
    ("{name: v, teachers: [teacher-a], curate: {max_ppl: 3}}",
     r"experiments\.0\.variants\.0\.curate\.max_ppl: unknown key \(known keys of"),
    ("{name: v, teachers: [teacher-a], curate: {max_tokens: many}}",
     r"experiments\.0\.variants\.0\.curate\.max_tokens: expected an integer"),
    ("{name: v, teachers: [teacher-a], train: {students: []}}",
     r"experiments\.0\.variants\.0\.train\.students: a variant cannot set this"),
    ("{name: v, teachers: [teacher-a], subsample: {size: 0}}",
     r"experiments\.0\.variants\.0\.subsample\.size: must be >= 1"),
    ("{name: v, teachers: [teacher-a], subsample: {size: 4, length: flat}}",
     r"experiments\.0\.variants\.0\.subsample\.length: must be one of as_is, uniform"),
    ("{name: v, teachers: []}", r"experiments\.0\.variants\.0\.teachers: give at least one teacher"),
])
def test_a_bad_experiment_variant_is_a_config_error_naming_its_key(variant, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "conf/local.yaml", [f"experiments=[{{name: e, variants: [{variant}]}}]"])


def test_the_shipped_experiments_resolve():
    from distill.config import variant_settings

    local = load_config(ROOT / "conf/local.yaml")
    (e,) = local.experiments
    settings = {v.name: variant_settings(local, 0, j) for j, v in enumerate(e.variants)}
    assert {v.name: v.teachers for v in e.variants if v.name.startswith("teacher-")} == {
        t: [t] for t in ("teacher-a", "teacher-b", "teacher-c")}
    assert sorted({s[0] for s in settings.values()}) == [0.7, 0.9, 1.0]
    assert {s[1].max_perplexity for s in settings.values()} == {None, 35.0}
    assert {v.subsample.length for v in e.variants if v.subsample} == {"as_is", "uniform"}
    cluster = load_config(ROOT / "conf/cluster.example.yaml")
    assert cluster.experiments and all(variant_settings(cluster, i, j) for i, x in enumerate(cluster.experiments)
                                       for j in range(len(x.variants)))


def test_curate_and_score_keys_are_checked():
    with pytest.raises(ConfigError, match=r"curate\.max_perplexity_by_teacher\.t: expected a number"):
        load_config(None, ["curate.max_perplexity_by_teacher={t: high}"])
    with pytest.raises(ConfigError, match=r"score\.perplexity\.engine: must be one of transformers, vllm"):
        load_config(None, ["score.perplexity.engine=tgi"])
    with pytest.raises(ConfigError, match=r"verify\.ifeval_score: must be one of strict, loose"):
        load_config(None, ["verify.ifeval_score=lenient"])
    with pytest.raises(ConfigError, match=r"export\.formats\.0: must be one of jsonl, parquet"):
        load_config(None, ["export.formats=[csv]"])


def test_defaults_without_a_file():
    assert load_config(None) == Config()


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("warehous: /x\n", "warehous: unknown key"),
        ("ingest:\n  max_line_bytes: lots\n", "ingest.max_line_bytes: expected an integer, got str 'lots'"),
        ("ingest:\n  max_line_bytes: true\n", "ingest.max_line_bytes: expected an integer, got bool"),
        ("ingest:\n  sources:\n    - name: a\n", "ingest.sources.0.path: required key is missing"),
        ("ingest:\n  sources:\n    - {name: a, path: p, format: csv}\n",
         "ingest.sources.0.format: must be one of auto, jsonl, parquet; got 'csv'"),
        ("teachers:\n  - {name: t, engine: vllm, model: m, sampling: 3}\n",
         "teachers.0.sampling: expected a mapping, got int 3"),
        ("spark:\n  conf:\n    spark.x: [1]\n", "spark.conf.spark.x: expected"),
        ("prepare:\n  decontam:\n    similarity_threshold: high\n",
         "prepare.decontam.similarity_threshold: expected a number"),
        ("prepare:\n  filters:\n    enabled: [urls]\n", "prepare.filters.enabled: unknown rule(s) ['urls']"),
        ("score:\n  perplexity:\n    batch_size: 16\n    token_budget: 8\n",
         "score.perplexity.token_budget: must be >= batch_size (16)"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("a: [\n", "is not valid YAML"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_typed():
    cfg = load_config(None, ["ingest.max_line_bytes=1000", "prepare.decontam.similarity_threshold=0.85",
                             "spark.conf.spark.sql.shuffle.partitions=4", "warehouse=/tmp/w",
                             "spark.conf.spark.ui.enabled=false"])
    assert cfg.ingest.max_line_bytes == 1000
    assert cfg.prepare.decontam.similarity_threshold == 0.85
    # a mapping key may hold dots: everything after `spark.conf.` is the Spark setting's name
    assert cfg.spark.conf == {"spark.sql.shuffle.partitions": 4, "spark.ui.enabled": False}
    assert cfg.warehouse == "/tmp/w"


@pytest.mark.parametrize(
    "override, message",
    [
        ("ingest.max_line_bytes=abc", "ingest.max_line_bytes: expected an integer, got str 'abc'"),
        ("ingest.max_line_byte=1", "ingest.max_line_byte: unknown key"),
        ("nope=1", "nope: unknown key"),
        ("warehouse.x=1", "warehouse: is a single value"),
        ("teachers.0.name=x", "teachers.0: no list item '0'"),
        ("ingest.max_line_bytes", "expected key=value"),
        ("prepare.decontam.similarity_threshold=[1", "is not valid YAML"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_override_into_a_list_item(tmp_path):
    path = write(tmp_path, "ingest:\n  sources:\n    - {name: a, path: p}\n")
    cfg = load_config(path, ["ingest.sources.0.format=parquet"])
    assert cfg.ingest.sources == [SourceConfig(name="a", path="p", format="parquet")]


def test_resolved_config_round_trips():
    cfg = load_config(ROOT / "conf/local.yaml", ["ingest.max_line_bytes=7"])
    import json

    again = load_config(None, [])
    assert again != cfg
    rebuilt = json.loads(cfg.to_json())
    assert rebuilt["ingest"]["max_line_bytes"] == 7
    assert rebuilt["teachers"][0]["name"] == "teacher-a"
