"""The small local model the demo and the tests use: built from the corpus, never downloaded.

A byte-level BPE tokenizer (Qwen2's pre-tokenizer, so any UTF-8 text, unseen Chinese included, can be
encoded) trained with the ``tokenizers`` library, saved as a ``Qwen2Tokenizer`` with Qwen3's ChatML chat
template; a ``Qwen3ForCausalLM`` of a few million parameters, briefly pre-trained on the corpus (causal
LM on random windows of the packed texts, each text also as one chat exchange, AdamW) so that it writes
sentences and answers in turns. The demo corpus (``demo_corpus``) is health prose written for it and is
disjoint from every demo QA pair, so that the demo fine-tune is scored on answers neither model saw. The folder is an ordinary
Hugging Face model folder: ``AutoModelForCausalLM`` / ``AutoTokenizer`` load it, and so does every other
tool that reads such folders.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DATA_DIR = REPO_ROOT / "curation" / "demo_data"
DEMO_CORPUS_FILE = DEMO_DATA_DIR / "pretrain_corpus.txt"
# A run of this many CJK characters (or words) shared with a demo pair counts as a leak.
OVERLAP_NGRAM = 8

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
# Qwen3 ships its thinking tags as added (not special) tokens: they survive skip_special_tokens.
THINK_TOKENS = ("<think>", "</think>")

DEFAULT_NAME = "medportal-demo"
DEFAULT_VOCAB_SIZE = 4096
DEFAULT_PRETRAIN_STEPS = 160
DEFAULT_CONTEXT_LENGTH = 2048
METADATA_FILE = "medportal_demo.json"

# Qwen3's chat template without the tool-calling branches: a leading system turn, user / assistant
# turns, reasoning kept only after the last user query, the last assistant turn always with its
# (possibly empty) think block, and the ``enable_thinking=False`` generation prompt that pre-fills an
# empty think block. ``training.engine.templates`` renders the named "qwen3" template the same way.
QWEN3_CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(found=false, last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}"
    "{%- if not ns.found and message.role == 'user' %}"
    "{%- set ns.found = true %}"
    "{%- set ns.last_query_index = (messages|length - 1) - loop.index0 %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- set content = message.content if message.content is string else '' %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set reasoning_content = '' %}"
    "{%- if message.reasoning_content is string %}"
    "{%- set reasoning_content = message.reasoning_content %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}"
    "{{- '<|im_start|>assistant\\n' + content }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# Words the prompt templates write around every turn: seen by the BPE trainer so that they become a few
# tokens rather than a dozen bytes.
_TEMPLATE_WORDS = (
    "system\nuser\nassistant\n\n### Instruction:\n### Response:\n"
    "患者信息：\n症状描述：\n检查结果：\n诊断建议：\n无\n"
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)


def demo_pairs() -> list[dict]:
    """The demo QA pairs: every record of ``curation/demo_data/*.jsonl`` (reviewed and drafts)."""
    records: list[dict] = []
    for path in sorted(DEMO_DATA_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def _units(text: str) -> list[str]:
    """Comparison units: one per CJK character, one per Latin word or number (case folded)."""
    return _UNIT_RE.findall(text.casefold())


_UNIT_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u9fff\uf900-\ufaff]+")


def corpus_overlap(texts: Iterable[str], pairs: Iterable[dict], *, n: int = OVERLAP_NGRAM) -> list[str]:
    """Where ``texts`` leak a QA pair: each problem as a sentence (empty list: disjoint).

    A leak is a pair's question, input or answer found whole in a text (compared on units: CJK
    characters and words, punctuation and spacing ignored), or any run of ``n`` units that a text
    shares with one of them. Pre-training on the answers a fine-tune is later scored on makes the
    base model look better than it is and the tuned model worse (docs/fine-tuning.md, "Demo").
    """
    grams: dict[tuple[str, ...], str] = {}
    wholes: list[tuple[str, str]] = []
    for pair in pairs:
        label = str(pair.get("instruction") or "")[:40]
        for key in ("instruction", "input", "output"):
            units = _units(str(pair.get(key) or ""))
            if not units:
                continue
            wholes.append(("\x1f".join(units), label))
            for i in range(len(units) - n + 1):
                grams.setdefault(tuple(units[i : i + n]), label)
    problems: list[str] = []
    for number, text in enumerate(texts, start=1):
        units = _units(text)
        joined = "\x1f".join(units)
        found = {label for whole, label in wholes if len(whole) > 1 and f"\x1f{whole}\x1f" in f"\x1f{joined}\x1f"}
        for i in range(len(units) - n + 1):
            label = grams.get(tuple(units[i : i + n]))
            if label is not None:
                found.add(label)
        problems += [f"corpus text {number} repeats the demo pair '{label}'" for label in sorted(found)]
    return problems


def demo_corpus() -> list[str]:
    """The demo model's pre-training texts: the paragraphs of ``curation/demo_data/pretrain_corpus.txt``.

    Short health-education prose written for this purpose, disjoint from every demo QA pair (checked
    here: a ``ValueError`` names the leaking pair), so that the demo fine-tune is scored on answers the
    model has never seen.
    """
    raw = DEMO_CORPUS_FILE.read_text(encoding="utf-8")
    texts = [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in re.split(r"\n\s*\n", raw)]
    texts = [text for text in texts if text]
    problems = corpus_overlap(texts, demo_pairs())
    if problems:
        raise ValueError(f"the demo pre-training corpus overlaps the demo QA pairs: {'; '.join(problems[:5])}")
    return texts


_SENTENCE_END = re.compile(r"(?<=[。！？])|(?<=[.!?])\s+(?=[A-Z])")


def chat_turn(text: str) -> str | None:
    """A corpus text as one chat exchange in the model's own template (``enable_thinking=False``):
    its first sentence as the user turn, the rest as the assistant's answer. None for a one-sentence
    text. Pre-training on these teaches the model the turn format, so that the base model answers a
    prompt with prose and stops, instead of babbling: the fine-tune then only has to teach answers."""
    parts = [part.strip() for part in _SENTENCE_END.split(text.strip(), maxsplit=1)]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return None
    question, answer = parts
    return f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n<think>\n\n</think>\n\n{answer}{IM_END}\n"


def _train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE with Qwen2's pre-tokenizer, wrapped as the ``Qwen2Tokenizer`` Qwen3 folders name."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    backend = Tokenizer(
        models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: nothing is ever unknown
        show_progress=False,
    )
    backend.train_from_iterator([*texts, _TEMPLATE_WORDS, _TEMPLATE_WORDS], trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens=[IM_START, IM_END],
        model_max_length=DEFAULT_CONTEXT_LENGTH,
    )
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in THINK_TOKENS])
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Warm-up, a constant stretch, then a cosine decay to 10% over the last fifth (warmup-stable-decay).

    A short build spends most of its steps at the peak rate: a cosine over the whole run leaves a
    40-step build stuck on the unigram plateau.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_start = max(warmup, int(total * 0.8))
    if step < decay_start:
        return peak
    progress = (step - decay_start) / max(1, total - decay_start)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def build_demo_model(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    name: str = DEFAULT_NAME,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    seed: int = 0,
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 768,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    seq_len: int = 128,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    chat_turns: bool = True,
    on_progress: Callable[[dict], None] | None = None,
) -> dict:
    """Train the tokenizer, pre-train a small Qwen3 on ``texts`` and save both into ``out_dir``.

    Returns ``{"path", "name", "num_parameters", "vocab_size", "initial_loss", "final_loss", "steps",
    "seconds"}``; the same figures but the path, plus the corpus size, seed and architecture, are written to
    ``medportal_demo.json``.
    ``on_progress`` receives ``{"step", "steps", "loss"}`` every 10 steps. Deterministic for a seed.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    started = time.monotonic()
    corpus = [t.strip() for t in texts if t and t.strip()]
    if not corpus:
        raise ValueError("the corpus is empty: the demo model needs some text to learn from")
    if hidden_size % num_attention_heads or num_attention_heads % num_key_value_heads:
        raise ValueError("hidden_size must be a multiple of num_attention_heads, and that of num_key_value_heads")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    tokenizer = _train_tokenizer(corpus, vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    stream: list[int] = []
    for text in corpus:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [eos_id]
        turn = chat_turn(text) if chat_turns else None
        if turn:
            stream += tokenizer(turn, add_special_tokens=False)["input_ids"] + [eos_id]
    data = torch.tensor(stream, dtype=torch.long)
    window = min(seq_len, len(stream) - 1)
    if window < 2:
        raise ValueError("the corpus is too short to pre-train on")

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=context_length,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=im_end_id,
        pad_token_id=eos_id,
        dtype="float32",
    )
    config.architectures = ["Qwen3ForCausalLM"]
    model = Qwen3ForCausalLM(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    warmup = max(1, pretrain_steps // 10)
    initial_loss = final_loss = float("nan")
    losses: list[float] = []
    for step in range(pretrain_steps):
        starts = torch.randint(0, len(stream) - window, (batch_size,), generator=generator)
        batch = torch.stack([data[s : s + window] for s in starts.tolist()])
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, pretrain_steps, learning_rate, warmup)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        losses.append(value)
        if step == 0:
            initial_loss = value
        if on_progress and (step % 10 == 9 or step == pretrain_steps - 1):
            on_progress({"step": step + 1, "steps": pretrain_steps, "loss": value})
    if losses:
        # The mean of the last few steps: one batch of random windows is a noisy figure.
        tail = losses[-min(5, len(losses)) :]
        final_loss = sum(tail) / len(tail)
    model.eval()

    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=[im_end_id, eos_id], pad_token_id=eos_id, do_sample=False, max_new_tokens=256
    )
    from transformers.utils import logging as hf_logging

    progress_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the command prints one JSON line; no tqdm noise around it
    try:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    finally:
        if progress_bars:
            hf_logging.enable_progress_bar()
    num_parameters = sum(p.numel() for p in model.parameters())
    seconds = round(time.monotonic() - started, 3)
    result = {
        "path": str(out.resolve()),
        "name": name,
        "num_parameters": num_parameters,
        "vocab_size": len(tokenizer),
        "initial_loss": initial_loss,
        "final_loss": final_loss,
        "steps": pretrain_steps,
        "seconds": seconds,
    }
    metadata = {
        **{key: value for key, value in result.items() if key != "path"},  # the folder may be moved after the build
        "seed": seed,
        "corpus_texts": len(corpus),
        "corpus_chars": sum(len(t) for t in corpus),
        "corpus_tokens": len(stream),
        "architecture": {
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads,
            "intermediate_size": intermediate_size,
            "seq_len": window,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
        },
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return result
