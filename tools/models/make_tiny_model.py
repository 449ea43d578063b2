#!/usr/bin/env python3
"""Build the embedded default model: a few-million-parameter Qwen3 causal LM with a byte-level
BPE tokenizer trained locally on text this script generates, a ChatML chat template, saved in
Hugging Face format (safetensors). Deterministic for a given seed; never touches the network.

It loads with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` like
any local model folder (e.g. Qwen3-0.6B).

    python3 tools/models/make_tiny_model.py --output models/tiny-qwen3 [--seed 0]
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EXTRA_TOKENS = ["<think>", "</think>"]

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

THINK_EMOJI = ["🤔", "💭", "🧠", "🔍", "🧐", "💡", "📝", "🔎", "⚙️", "🌀"]
STOP_EMOJI = ["🛑", "✅", "🏁", "⏹️", "🔚", "✋", "🚦", "📌", "🎯", "🔒"]
WORDS = ("the a an is are was be to of and in that have it for not on with as you do at this but by from "
         "they we say her she or will my one all would there their what so up out if about who get which go "
         "me when make can like time no just him know take people into year your good some could them see "
         "other than then now look only come its over think also back after use two how our work first well "
         "way even new want because any these give day most us question answer explain why model train data "
         "file step loss value number list true false valid invalid therefore conclusion premise every none "
         "cat dog bird fish tree river city code function return print hello world please thanks sure").split()
CATEGORIES = ["cats", "dogs", "birds", "mammals", "animals", "reptiles", "poets", "artists", "doctors",
              "teachers", "students", "robots", "machines", "planets", "stars", "fruits", "apples",
              "bloops", "razzies", "lazzies", "wugs", "zorps", "flims", "glorbs"]
OPS = ["add", "sub", "mul", "div", "and", "or", "not", "max", "min", "eq"]


def corpus(seed: int, n_lines: int = 6000) -> list[str]:
    """Deterministic training text: chat, syllogisms, code, emoji, symbolic answers, digits."""
    rng = random.Random(seed)
    lines: list[str] = []
    for i in range(n_lines):
        kind = i % 7
        if kind == 0:
            n = rng.randint(5, 20)
            s = " ".join(rng.choice(WORDS) for _ in range(n))
            lines.append(s.capitalize() + rng.choice([".", "?", "!"]))
        elif kind == 1:
            a, b, c = rng.sample(CATEGORIES, 3)
            q1, q2 = rng.choice(["All", "Some", "No"]), rng.choice(["All", "Some", "No"])
            lines.append(f"{q1} {a} are {b}. {q2} {b} are {c}. Does it follow that {q1.lower()} {a} are {c}? "
                         f"Answer: {rng.choice(['valid', 'invalid'])}")
        elif kind == 2:
            name = rng.choice(["foo", "bar", "add", "train", "load", "parse"])
            lines.append(f"def {name}(x, y=1):\n    return x + y * {rng.randint(0, 99)}\n")
            lines.append("```python\nfor i in range(10):\n    print(i)\n```")
        elif kind == 3:
            t, s = rng.choice(THINK_EMOJI), rng.choice(STOP_EMOJI)
            lines.append(t * rng.randint(2, 8) + " " + " ".join(rng.choice(WORDS) for _ in range(6))
                         + "\n" + s * rng.randint(2, 4))
        elif kind == 4:
            op = rng.choice(OPS)
            lines.append(f"<<ANS_START>> ({op} {rng.randint(0, 999)} {rng.randint(0, 999)}) <<ANS_END>>")
        elif kind == 5:
            lines.append(" ".join(str(rng.randint(0, 10 ** rng.randint(1, 6))) for _ in range(8)))
        else:
            lines.append("<|im_start|>user\n" + " ".join(rng.choice(WORDS) for _ in range(8))
                         + "<|im_end|>\n<|im_start|>assistant\n<think>\n</think>\n"
                         + " ".join(rng.choice(WORDS) for _ in range(10)) + "<|im_end|>")
    return lines


def build_tokenizer(seed: int, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS + EXTRA_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                   model_max_length=2048, clean_up_tokenization_spaces=False)
    fast.chat_template = CHATML_TEMPLATE
    return fast


def model_or_tiny(folder: str | Path | None, prefix: str = "bench-") -> Path:
    """``folder`` when given, else the tiny model built (seed 0) in a new temporary folder: what a
    benchmark's ``--model`` option means."""
    if folder:
        return Path(folder)
    import tempfile
    return build(Path(tempfile.mkdtemp(prefix=prefix)) / "tiny-qwen3", seed=0)


def build(output: str | Path, seed: int = 0, vocab_size: int = 4096, hidden_size: int = 256,
          num_layers: int = 4, num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 768,
          max_positions: int = 2048) -> Path:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(seed, vocab_size)
    eos_id = tok.convert_tokens_to_ids("<|im_end|>")
    pad_id = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
                      num_hidden_layers=num_layers, num_attention_heads=num_heads,
                      num_key_value_heads=num_kv_heads, head_dim=hidden_size // num_heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=True,
                      bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id,
                      rope_theta=10000.0, rms_norm_eps=1e-6, initializer_range=0.02)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=[eos_id, pad_id], pad_token_id=pad_id,
                                               bos_token_id=pad_id, do_sample=False)
    model.save_pretrained(output)
    tok.save_pretrained(output)
    (output / "tiny_model.json").write_text(json.dumps({
        "built_by": "tools/models/make_tiny_model.py", "seed": seed, "vocab_size": len(tok),
        "parameters": sum(p.numel() for p in model.parameters())}, indent=2) + "\n")
    return output


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="models/tiny-qwen3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    a = ap.parse_args(argv)
    out = build(a.output, seed=a.seed, vocab_size=a.vocab_size, hidden_size=a.hidden_size, num_layers=a.layers)
    print(json.dumps({"output": str(out), **json.loads((out / "tiny_model.json").read_text())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
