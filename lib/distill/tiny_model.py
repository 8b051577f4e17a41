"""Build a tiny causal LM on disk, offline, for tests and the embedded default.

Nothing may be downloaded at run time, so tests and the local sample run make their own model: a
byte-level BPE tokenizer trained on a little text, wrapped with a chat template, and a randomly
initialised Qwen2 model small enough to load in seconds. Its text is noise; it exercises the real
loading, tokenization, generation and log-prob paths of transformers and vLLM, not quality.
vLLM's CPU attention needs head_dim >= 64, hence hidden 128 with 2 heads.
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_DEFAULT_TEXT = [
    "<think> Let me work through the problem step by step. </think> <answer> The answer is 42. </answer>",
    "def solve(n):\n    return sum(range(n + 1))\n\nprint(solve(int(input())))",
    "Write a short poem about the sea, in exactly three lines, without using commas.",
    "The mitochondria produce most of the cell's chemical energy through respiration.",
    "If a train travels 60 km in 45 minutes, its average speed is 80 km/h.",
    "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b; }",
]


def build_tiny_model(out_dir: str | Path, texts: list[str] | None = None, vocab_size: int = 512,
                     seed: int = 0, hidden_size: int = 128, layers: int = 2) -> Path:
    """Write tokenizer + random Qwen2 weights to `out_dir` and return it. Idempotent. (A wider, deeper one
    gives benchmarks more compute per token; heads stay 64 wide.)"""
    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((texts or _DEFAULT_TEXT) * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=hidden_size // 64, num_key_value_heads=1,
        max_position_embeddings=2048,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None,
        tie_word_embeddings=True, torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    fast.save_pretrained(tmp)
    (tmp / "generation_config.json").write_text(json.dumps({"eos_token_id": fast.eos_token_id}))
    tmp.rename(out)  # appear whole or not at all: a killed build must not leave a half model
    return out


def texts_from_files(paths: list[str]) -> list[str]:
    """Training text for a tiny reference model: the `response` (or `text`) field of JSONL rows, or each
    non-empty line of other files."""
    texts = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = line
            if isinstance(row, dict):
                row = row.get("response") or row.get("text")
            if isinstance(row, str) and row.strip():
                texts.append(row)
    if not texts:
        raise ValueError(f"no training text in {', '.join(paths)}")
    return texts


def train_tiny_model(out_dir: str | Path, texts: list[str], steps: int = 200, seq_len: int = 128,
                     batch_size: int = 8, lr: float = 3e-3, seed: int = 0) -> Path:
    """A tiny model (build_tiny_model) trained for `steps` on `texts`, written to `out_dir`. Idempotent.

    It gives the embedded default a reference model that exists offline and has seen text like the responses
    it scores, so its perplexities differ between texts in a meaningful direction. The numbers are still only
    illustrative: a 2-layer model trained for seconds is no judge of quality.
    """
    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    import shutil

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # shard bars in a job log are noise
    base = build_tiny_model(out.with_name(out.name + ".untrained"), texts, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    stream = [i for t in texts for i in [*tokenizer(t, add_special_tokens=False)["input_ids"],
                                          tokenizer.eos_token_id]]
    data = torch.tensor(stream * max(1, -(-(seq_len + 1) // len(stream))))  # at least one window
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=gen)
        batch = torch.stack([data[s : s + seq_len] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "generation_config.json").write_text(json.dumps({"eos_token_id": tokenizer.eos_token_id}))
    tmp.rename(out)
    shutil.rmtree(base, ignore_errors=True)
    return out
