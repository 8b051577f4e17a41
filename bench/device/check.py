"""The device check: what only a GPU can measure, in one short run, one JSON line per figure.

  bash bench/device/check.sh           # a GPU node: a ~1.5B-parameter model, one 32k-token training row
  bash bench/device/check.sh --tiny    # CPU, tiny models, seconds: what the test suite runs, so it cannot rot

It needs torch and transformers only (no Spark, vLLM, Java or network) and builds its random-weight models
itself: a Qwen2 of Qwen2.5-1.5B's shape (151,936-token vocabulary) with a small byte-level tokenizer, and an
XLM-R encoder of bge-m3's shape. The figures:

  perplexity  the project's transformers perplexity scorer (distill.scorers.perplexity, bf16, batched, logits
              only where responses are) against a plain loop (one sequence at a time, full logits): tokens/s
  train_step  one optimizer step on one packed row (32k tokens) as the training loop does it (bf16 autocast,
              gradient checkpointing, AdamW), with the plain loss (full logits) and the chunked one
              (distill.training.loss, train.loss_chunk_tokens): tokens/s and peak GPU memory
  embedder    texts/s of the embedder (FlagEmbedding's model as distill.embedder runs it, where installed;
              otherwise the same forward + CLS pooling with transformers, said in `impl`)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))

# sizes: (full, tiny)
SHAPES = {
    "full": {"hidden": 1536, "layers": 28, "intermediate": 8960, "heads": 12, "kv_heads": 2, "vocab": 151936,
             "ppl_items": 64, "ppl_tokens": 2048, "ppl_batch": 8, "train_tokens": 32768, "chunk": 2048,
             "enc_hidden": 1024, "enc_layers": 24, "enc_heads": 16, "enc_vocab": 250002, "texts": 2048,
             "text_tokens": 128},
    "tiny": {"hidden": 128, "layers": 2, "intermediate": 256, "heads": 2, "kv_heads": 1, "vocab": 4096,
             "ppl_items": 4, "ppl_tokens": 64, "ppl_batch": 2, "train_tokens": 256, "chunk": 64,
             "enc_hidden": 64, "enc_layers": 2, "enc_heads": 2, "enc_vocab": 1024, "texts": 16,
             "text_tokens": 16},
}


def emit(**figure) -> None:
    print(json.dumps(figure), flush=True)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def peak_mib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def build_lm(folder: Path, s: dict, device: str):
    """A random Qwen2 of the shape `s`, saved to `folder` (bf16 on a GPU) with the tiny tokenizer; returns it."""
    import torch
    from distill.tiny_model import build_tiny_model
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok_dir = build_tiny_model(folder.parent / "tokenizer")  # its tokenizer and chat template
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    config = Qwen2Config(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                         num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                         num_key_value_heads=s["kv_heads"], max_position_embeddings=max(32768, s["train_tokens"]),
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model.to(torch.bfloat16 if device == "cuda" else torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer, sum(p.numel() for p in model.parameters())


def perplexity(folder: Path, tokenizer, s: dict, device: str, dtype: str) -> None:
    import torch
    from distill.scorers.perplexity import TransformersScorer, render
    from transformers import AutoModelForCausalLM

    rng = random.Random(0)
    words = "the answer is step let me think about this problem carefully and check each case".split()
    items = []
    for _ in range(s["ppl_items"]):
        response = " ".join(rng.choice(words) for _ in range(s["ppl_tokens"]))
        items.append(([{"role": "user", "content": "Solve the problem."}], response))
    tokens = sum(len(render(tokenizer, m, r)[0]) for m, r in items)

    scorer = TransformersScorer(folder, device=device, dtype=dtype, batch_size=s["ppl_batch"])
    scorer.score(items[: s["ppl_batch"]])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    scored = scorer.score(items)
    sync(device)
    batched = time.perf_counter() - t0
    scorer.close()

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
    sync(device)
    t0 = time.perf_counter()
    plain = []
    with torch.no_grad():
        for messages, response in items:
            ids, start = render(tokenizer, messages, response)
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
            lps = torch.log_softmax(logits[start - 1 : -1], dim=-1).gather(
                -1, torch.tensor(ids[start:], device=device)[:, None])
            plain.append(math.exp(-float(lps.mean())))
    sync(device)
    loop = time.perf_counter() - t0
    agree = max(abs(a.ppl - b) / b for a, b in zip(scored, plain, strict=True))
    emit(figure="perplexity", device=device, dtype=dtype, items=len(items), tokens=tokens,
         scorer_tokens_per_s=round(tokens / batched, 1), plain_loop_tokens_per_s=round(tokens / loop, 1),
         ratio=round(loop / batched, 2), max_relative_ppl_difference=round(agree, 4))
    del model


def train_step(folder: Path, s: dict, device: str) -> None:
    import contextlib

    import torch
    from distill.training.loss import token_loss_sum
    from transformers import AutoModelForCausalLM

    n = s["train_tokens"]
    torch.manual_seed(0)
    ids = torch.randint(0, 500, (1, n), device=device)
    # one packed row of 8 samples: positions restart per sample, the first 10% of each is prompt (no target)
    size = n // 8
    pos = (torch.arange(n, device=device) % size)[None]
    labels = ids.clone()
    labels[pos < size // 10] = -100

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()

    for name, chunk in (("plain", 0), ("chunked", s["chunk"])):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            seconds = []
            for _ in range(2):  # the first step makes the optimizer's state; the second is the one timed
                sync(device)
                t0 = time.perf_counter()
                loss = token_loss_sum(model, ids, labels, pos, autocast, chunk)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sync(device)
                seconds.append(time.perf_counter() - t0)
            emit(figure="train_step", device=device, loss=name, chunk_tokens=chunk, tokens=n,
                 tokens_per_s=round(n / seconds[-1], 1), peak_gpu_mib=peak_mib(device),
                 loss_value=float(loss.detach()))
        except torch.OutOfMemoryError as err:
            emit(figure="train_step", device=device, loss=name, chunk_tokens=chunk, tokens=n,
                 error=f"out of memory: {str(err)[:200]}", peak_gpu_mib=peak_mib(device))
        del model, opt
        if device == "cuda":
            torch.cuda.empty_cache()


def embedder(work: Path, tokenizer, s: dict, device: str) -> None:
    import numpy as np
    import torch
    from transformers import AutoModel, XLMRobertaConfig, XLMRobertaModel

    folder = work / "encoder"
    config = XLMRobertaConfig(vocab_size=s["enc_vocab"], hidden_size=s["enc_hidden"],
                              num_hidden_layers=s["enc_layers"], num_attention_heads=s["enc_heads"],
                              intermediate_size=4 * s["enc_hidden"], max_position_embeddings=8194,
                              pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        XLMRobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rng = random.Random(1)
    words = "what is the sum of all integers from one to one hundred write a poem about".split()
    texts = [" ".join(rng.choice(words) for _ in range(s["text_tokens"])) for _ in range(s["texts"])]
    batch = 64
    try:
        from distill.embedder import EmbedderSpec, embed

        spec = EmbedderSpec(str(folder), device=device, pooling="cls", batch_size=batch, max_length=512)
        embed(spec, texts[:batch])  # load + warm-up

        def run():
            return embed(spec, texts)
        impl = "flagembedding"
    except ImportError:
        model = AutoModel.from_pretrained(folder, dtype=torch.float16 if device == "cuda" else torch.float32)
        model = model.to(device).eval()

        def run():
            out = []
            with torch.no_grad():
                for b in range(0, len(texts), batch):
                    enc = tokenizer(texts[b : b + batch], padding=True, truncation=True, max_length=512,
                                    return_tensors="pt").to(device)
                    cls = model(**enc).last_hidden_state[:, 0].float()
                    out.append(torch.nn.functional.normalize(cls, dim=-1).cpu().numpy())
            return np.concatenate(out)
        impl = "transformers (FlagEmbedding not installed)"
        run()
    sync(device)
    t0 = time.perf_counter()
    vectors = run()
    sync(device)
    seconds = time.perf_counter() - t0
    emit(figure="embedder", device=device, impl=impl, texts=len(texts), dim=int(vectors.shape[1]),
         texts_per_s=round(len(texts) / seconds, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU (the test suite's mode)")
    parser.add_argument("--only", choices=["perplexity", "train_step", "embedder"], action="append")
    args = parser.parse_args(argv)
    import torch

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if not args.tiny and device == "cpu":
        print("check: no CUDA device; run with --tiny for the CPU mode", file=sys.stderr)
        return 2
    s = SHAPES["tiny" if args.tiny else "full"]
    only = set(args.only or ["perplexity", "train_step", "embedder"])
    import transformers

    transformers.utils.logging.disable_progress_bar()
    emit(figure="environment", device=device, torch=torch.__version__, transformers=transformers.__version__,
         gpu=torch.cuda.get_device_name(0) if device == "cuda" else None, python=sys.version.split()[0])
    with tempfile.TemporaryDirectory(prefix="distill-check-") as tmp:
        t0 = time.perf_counter()
        folder, tokenizer, params = build_lm(Path(tmp) / "lm", s, device)
        emit(figure="model", parameters=params, seconds_to_build=round(time.perf_counter() - t0, 1))
        if "perplexity" in only:
            perplexity(folder, tokenizer, s, device, "bfloat16" if device == "cuda" else "float32")
        if "train_step" in only:
            train_step(folder, s, device)
        if "embedder" in only:
            embedder(Path(tmp), tokenizer, s, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
