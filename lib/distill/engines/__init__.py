"""Engines behind one call (see `base.py`), built from a teacher's config, one per Python worker.

`check_engine(teacher, key)` validates a teacher's engine settings on the driver, so a typo fails the
job before any task starts and the error names the config key. `get_engine(teacher)` builds the engine
inside a task and keeps it in this module's cache: with `spark.python.worker.reuse` the next task on
the same worker finds it loaded. At most one in-process model (vLLM or transformers) is held at a time:
a worker that moves on to another teacher's model frees the previous one first (a GPU holds one).
"""

from __future__ import annotations

from distill.config import ConfigError, TeacherConfig, build_section
from distill.engines.base import Completion, Engine, EngineError, Request
from distill.engines.hf_engine import TransformersOptions
from distill.engines.openai_engine import OpenAIOptions
from distill.engines.replay import ReplayOptions
from distill.ids import canonical_json

__all__ = ["Completion", "Engine", "EngineError", "Request", "check_engine", "for_tasks", "get_engine"]

OPTIONS = {"openai": OpenAIOptions, "transformers": TransformersOptions, "replay": ReplayOptions}
IN_PROCESS = ("vllm", "transformers")
LOCAL_MODEL = ("vllm", "transformers", "replay")  # `model` is a path the workers read

_cache: dict[str, Engine] = {}


def engine_options(teacher: TeacherConfig, key: str):
    """The engine's typed options (vLLM's engine_args pass straight through to vllm.LLM)."""
    cls = OPTIONS.get(teacher.engine)
    if cls is None:
        return dict(teacher.engine_args)
    return build_section(cls, teacher.engine_args, f"{key}.engine_args")


def check_engine(teacher: TeacherConfig, key: str) -> None:
    """Raise ConfigError naming the key when a teacher's settings cannot work."""
    engine_options(teacher, key)
    if teacher.engine == "vllm":
        import dataclasses

        from vllm.engine.arg_utils import EngineArgs

        known = {f.name for f in dataclasses.fields(EngineArgs)}
        for name in teacher.engine_args:
            if name not in known:
                raise ConfigError(f"{key}.engine_args.{name}: not a vLLM engine argument")
    if teacher.engine in LOCAL_MODEL:
        check_local_path(teacher.model, f"{key}.model")


def check_local_path(path: str, key: str) -> None:
    """A model (or replay file) the workers load must exist; nothing is downloaded at run time. Checked on the
    driver: nodes are expected to see the same paths (a shared mount, or the same folder baked into each)."""
    import os
    from urllib.parse import urlparse

    if urlparse(path).scheme in ("", "file") and not os.path.exists(path.removeprefix("file:")):
        raise ConfigError(f"{key}: no such file or folder {path!r} (models are local paths; nothing is "
                          "downloaded at run time)")


def for_tasks(teacher: TeacherConfig) -> TeacherConfig:
    """The teacher as a task should build its engine: a relative model path that exists here, on the driver,
    made absolute. Config paths are relative to where the job is started, but an executor runs in a folder
    of its own (a standalone worker's work/<app>/<n>/), where `data/...` names nothing. Served model names
    and paths that do not exist here are left as they are."""
    import dataclasses
    from pathlib import Path

    model = teacher.model
    if teacher.engine == "openai" or "://" in model or model.startswith("file:") or Path(model).is_absolute():
        return teacher
    if not Path(model).exists():
        return teacher
    return dataclasses.replace(teacher, model=str(Path(model).resolve()))


def pin_task_gpus() -> None:
    """Point CUDA at the GPUs Spark gave this task (spark.task.resource.gpu.amount); no-op without any."""
    import os

    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
    except Exception:  # noqa: BLE001 - outside Spark, or a Spark without resources
        gpus = None
    if gpus is not None and gpus.addresses:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)


def build_engine(teacher: TeacherConfig) -> Engine:
    options = engine_options(teacher, "teacher")
    if teacher.engine in IN_PROCESS:
        pin_task_gpus()
    if teacher.engine == "vllm":
        from distill.engines.vllm_engine import VllmEngine

        return VllmEngine(teacher.model, options)
    if teacher.engine == "transformers":
        from distill.engines.hf_engine import TransformersEngine

        return TransformersEngine(teacher.model, options)
    if teacher.engine == "openai":
        from distill.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(teacher.model, options)
    from distill.engines.replay import ReplayEngine

    return ReplayEngine(teacher.model, options)


def get_engine(teacher: TeacherConfig) -> Engine:
    """The loaded engine for the teacher's engine, model and engine_args. Sampling is not part of the key:
    it travels with each request (`Request.sampling`), so new settings never reload a model."""
    key = canonical_json([teacher.engine, teacher.model, teacher.engine_args])
    engine = _cache.get(key)
    if engine is None:
        if teacher.engine in IN_PROCESS:
            from distill.worker_daemon import model_dropped

            for old in [k for k, e in _cache.items() if e.name in IN_PROCESS]:
                _cache.pop(old).close()
                model_dropped()
        engine = _cache[key] = build_engine(teacher)
    return engine
