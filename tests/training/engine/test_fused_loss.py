"""The chunked fused linear cross-entropy equals transformers' plain loss and its gradients."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from training.engine.data import IGNORE_INDEX, SFTCollator, encode_records, pack_examples
from training.engine.fused_loss import (
    auto_chunk_size,
    causal_lm_of,
    enable_fused_loss,
    fused_causal_lm_loss,
    plain_causal_lm_loss,
    unsupported_reason,
)

DEMO_RECORDS = Path(__file__).resolve().parents[3] / "curation" / "demo_data" / "demo_reviewed.jsonl"
RTOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def random_case(seed=0, batch=3, seq=11, hidden=16, vocab=97, bias=False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, seq, hidden, generator=g)
    w = torch.randn(vocab, hidden, generator=g) * 0.3
    b = torch.randn(vocab, generator=g) * 0.1 if bias else None
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    labels[0, :4] = IGNORE_INDEX  # a prompt
    labels[1, -3:] = IGNORE_INDEX  # right padding
    labels[2, 5] = IGNORE_INDEX  # a packed boundary inside the row
    return h, w, b, labels


def grads(loss_fn, h, w, b, labels, **kwargs):
    h = h.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True) if b is not None else None
    loss = loss_fn(h, w, labels, bias=b, **kwargs)
    (loss * 3.0).backward()  # a scale on the way back (as the Trainer's accumulation or a loss scaler)
    return loss.detach(), h.grad, w.grad, (b.grad if b is not None else None)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 16, 1000])
@pytest.mark.parametrize("num_items", [None, 41])
def test_loss_and_every_gradient_equal_the_plain_path(chunk_size, num_items):
    h, w, b, labels = random_case(bias=True)
    n = torch.tensor(num_items) if num_items is not None else None
    plain = grads(plain_causal_lm_loss, h, w, b, labels, num_items_in_batch=n)
    fused = grads(fused_causal_lm_loss, h, w, b, labels, num_items_in_batch=n, chunk_size=chunk_size)
    assert rel(fused[0], plain[0]) < RTOL
    for got, want in zip(fused[1:], plain[1:], strict=True):
        assert rel(got, want) < RTOL


def test_given_shift_labels_are_used_as_they_are():
    h, w, _, labels = random_case(seed=1)
    shift = torch.roll(labels, 2, dims=1)
    plain = grads(plain_causal_lm_loss, h, w, None, labels, shift_labels=shift)
    fused = grads(fused_causal_lm_loss, h, w, None, labels, shift_labels=shift, chunk_size=5)
    assert rel(fused[0], plain[0]) < RTOL and rel(fused[1], plain[1]) < RTOL


def test_without_gradients_nothing_is_kept_and_the_loss_is_the_same():
    h, w, _, labels = random_case(seed=2)
    with torch.no_grad():
        fused = fused_causal_lm_loss(h, w, labels, chunk_size=4)
        plain = plain_causal_lm_loss(h, w, labels)
    assert not fused.requires_grad
    assert rel(fused, plain) < RTOL


def test_no_labelled_token_is_nan_as_in_the_plain_path():
    h, w, _, labels = random_case(seed=3)
    labels[:] = IGNORE_INDEX
    assert torch.isnan(fused_causal_lm_loss(h, w, labels)) and torch.isnan(plain_causal_lm_loss(h, w, labels))


def test_the_automatic_chunk_keeps_one_chunk_of_a_qwen_vocabulary_near_128_mib():
    size = auto_chunk_size(151_936)
    assert 150 < size < 300
    assert size * 151_936 * 4 <= 128 * 2**20
    assert auto_chunk_size(100) == 8192 and auto_chunk_size(10**9) == 16


# ---- on the demo model, through PEFT LoRA --------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_and_examples(demo_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    records = [json.loads(line) for line in DEMO_RECORDS.read_text(encoding="utf-8").splitlines() if line.strip()][:8]
    examples, dropped, _ = encode_records(tokenizer, "default", records, 256)
    assert dropped == 0
    return tokenizer, examples


def lora_model(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa", dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    # LoRA B starts at zero; move it so that the LoRA gradients depend on the whole path.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return model


def lora_grads(model, batch, num_items=None):
    model.zero_grad(set_to_none=True)
    kwargs = {"num_items_in_batch": torch.tensor(num_items)} if num_items is not None else {}
    loss = model(**batch, **kwargs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def batches(tokenizer, examples):
    collate = SFTCollator(tokenizer.pad_token_id)
    padded = collate(examples[:4])
    packed = collate(pack_examples(examples, 256))
    return {"padded": padded, "packed": packed}


@pytest.mark.parametrize("kind", ["padded", "packed"])
@pytest.mark.parametrize("chunk_size", [7, 64, None])
def test_a_lora_model_gets_the_same_loss_and_lora_gradients(demo_model_dir, tokenizer_and_examples, kind, chunk_size):
    tokenizer, examples = tokenizer_and_examples
    batch = batches(tokenizer, examples)[kind]
    if kind == "packed":
        assert (batch["position_ids"] == 0).sum() > batch["position_ids"].shape[0]  # several examples per row
    labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    plain_model = lora_model(demo_model_dir)
    fused_model = copy.deepcopy(plain_model)
    enable_fused_loss(fused_model, chunk_size=chunk_size)
    if chunk_size == 7:
        assert labelled % 7 != 0  # the last chunk is a partial one, and chunks end inside examples
    for num_items in (None, labelled * 2):  # the mean, and a Trainer's accumulation normaliser
        plain_loss, plain_grads = lora_grads(plain_model, batch, num_items)
        fused_loss, fused_grads = lora_grads(fused_model, batch, num_items)
        assert rel(fused_loss, plain_loss) < RTOL
        assert plain_grads.keys() == fused_grads.keys() and len(plain_grads) > 0
        worst = max(rel(fused_grads[name], plain_grads[name]) for name in plain_grads)
        assert worst < RTOL, worst


def test_the_fused_forward_leaves_generation_alone(demo_model_dir, tokenizer_and_examples):
    tokenizer, examples = tokenizer_and_examples
    model = lora_model(demo_model_dir)
    batch = batches(tokenizer, examples)["padded"]
    with torch.no_grad():
        before = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        enable_fused_loss(model)
        after = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with_labels = model(**batch)
    assert torch.equal(before, after)
    assert with_labels.logits is None and torch.isfinite(with_labels.loss)
    assert causal_lm_of(model)._medportal_fused_loss == "chunked"


def test_a_model_that_caps_its_logits_is_refused_with_the_reason(demo_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    assert unsupported_reason(model) is None
    model.config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping" in unsupported_reason(model)
    with pytest.raises(ValueError, match="caps its logits"):
        enable_fused_loss(model)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal")
def test_liger_on_a_cpu_is_a_clear_error(demo_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="use_liger_kernel needs a CUDA GPU"):
        enable_fused_loss(model, use_liger=True)


def test_under_bf16_autocast_it_follows_the_plain_path_within_bf16_rounding():
    # QLoRA and mixed precision: fp32 hidden states and head, the matmuls in bf16.
    h, w, _, labels = random_case(seed=4, hidden=32, vocab=211)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = grads(plain_causal_lm_loss, h, w, None, labels)
        fused = grads(fused_causal_lm_loss, h, w, None, labels, chunk_size=5)
    assert fused[1].dtype == plain[1].dtype == torch.float32
    assert rel(fused[0], plain[0]) < 1e-3
    assert rel(fused[1], plain[1]) < 2e-2 and rel(fused[2], plain[2]) < 2e-2
