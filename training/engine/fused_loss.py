"""The causal-LM loss without the full logits: the output head and cross-entropy in chunks of tokens.

The plain path (``Qwen3ForCausalLM.forward`` → ``ForCausalLMLoss``) materialises
``batch × seq × vocab`` logits, upcasts them to fp32 and keeps them (and their gradient) for the
backward pass: 8 × 1024 × 151,936 × 4 bytes = 5 GB per copy for a Qwen3 vocabulary. Here the last
hidden states of the tokens that carry a label go through the head ``chunk_size`` tokens at a
time; each chunk's logits live only while its loss and its gradients (with respect to the
hidden states, and to the head's weight/bias when they are trainable) are computed, in the
forward pass. The backward pass only scales the stored gradients by the incoming gradient —
the well-known chunked "fused linear cross-entropy" (as Liger's, without Triton).

Exactly the plain path's semantics: labels are shifted left by one (or ``shift_labels`` is used
as given), ``-100`` is ignored, logits are computed in the hidden states' dtype and upcast to
fp32 for the softmax, the loss is the sum over labelled tokens divided by ``num_items_in_batch``
when the Trainer passes it (gradient accumulation over several micro-batches) and the mean
otherwise. ``enable_fused_loss(model)`` swaps a causal LM's ``forward`` for one that does this
whenever labels are given; without labels (generation) it is the model's own forward.

Imports torch only. ``liger_kernel`` is imported by ``enable_fused_loss(..., use_liger=True)``
and nowhere else.
"""

from __future__ import annotations

import types
from typing import Any

import torch

from training.engine.config import loss_chunk_tokens as auto_chunk_size

IGNORE_INDEX = -100


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum over tokens of cross-entropy(hidden @ weightᵀ + bias, target), chunk by chunk.

    ``hidden`` (N, H) holds only tokens with a target (no ignore_index here), ``weight`` (V, H).
    Gradients are computed in the forward pass (one chunk of logits at a time) and scaled by the
    incoming gradient in the backward pass; under ``torch.no_grad`` none are computed.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size):  # noqa: D401 - autograd signature
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_bias = bias is not None and ctx.needs_input_grad[2]
        any_grad = need_hidden or need_weight or need_bias
        n = hidden.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_bias else None
        for start in range(0, n, chunk_size):
            h = hidden[start : start + chunk_size]
            t = targets[start : start + chunk_size]
            logits = torch.nn.functional.linear(h, weight, bias)  # as lm_head(...): under autocast, in its dtype
            compute_dtype = logits.dtype
            logits = logits.float()
            target_logits = logits.gather(1, t.unsqueeze(1)).squeeze(1)
            # log-sum-exp by hand, in place: one buffer per chunk (torch.logsumexp allocates another and
            # the softmax would take a second exp pass).
            peak = logits.amax(dim=1, keepdim=True)
            exps = logits.sub_(peak).exp_()
            sums = exps.sum(dim=1, keepdim=True)
            total += (sums.log().add_(peak).squeeze(1) - target_logits).sum()
            if not any_grad:
                continue
            # d(sum of losses)/d logits = softmax − one-hot, in place over the chunk's buffer.
            grad_logits = exps.div_(sums)
            grad_logits[torch.arange(h.shape[0], device=h.device), t] -= 1.0
            if need_bias:
                grad_bias += grad_logits.sum(0)
            grad_logits = grad_logits.to(compute_dtype)  # the plain path casts back to the head's dtype here too
            if need_hidden:
                rows = grad_hidden[start : start + chunk_size]
                if rows.dtype == compute_dtype:
                    torch.matmul(grad_logits, weight.to(compute_dtype), out=rows)
                else:  # autocast: computed in its dtype, the gradient in the hidden states' own (as autograd does)
                    rows.copy_(grad_logits @ weight.to(compute_dtype))
            if need_weight:
                grad_weight += (grad_logits.t() @ h.to(compute_dtype)).float()
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_output).to(ctx.weight_dtype)
        if grad_bias is not None:
            grad_bias = (grad_bias * grad_output).to(ctx.bias_dtype)
        return grad_hidden, grad_weight, grad_bias, None, None


def _labelled(hidden: torch.Tensor, labels: torch.Tensor | None, shift_labels: torch.Tensor | None, ignore_index: int):
    """(hidden rows, targets) of the tokens that predict a label, in the plain path's shifted order."""
    if shift_labels is None:
        padded = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)
        shift_labels = padded[..., 1:]
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = shift_labels.reshape(-1).to(hidden.device)
    # One host sync per micro-batch (the number of labelled tokens): prompts and padding never
    # reach the head, which saves their share of its FLOPs (2 × tokens × hidden × vocab).
    index = (flat_targets != ignore_index).nonzero().squeeze(1)
    return flat_hidden.index_select(0, index), flat_targets.index_select(0, index)


def fused_causal_lm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    bias: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
    liger_loss: Any = None,
) -> torch.Tensor:
    """``ForCausalLMLoss(lm_head(hidden), labels, …)`` without the logits; fp32 scalar.

    ``hidden`` (B, T, H) are the decoder's last hidden states (after the final norm), ``weight``
    and ``bias`` the output head's. ``liger_loss`` is a ``LigerFusedLinearCrossEntropyLoss(reduction="sum")``
    to use instead of the chunked function (CUDA).
    """
    rows, targets = _labelled(hidden, labels, shift_labels, ignore_index)
    if liger_loss is not None:
        total = liger_loss(weight, rows, targets, bias)
        total = (total[0] if isinstance(total, tuple) else total).float()
    else:
        total = ChunkedLinearCrossEntropy.apply(rows, weight, bias, targets, int(chunk_size or auto_chunk_size(weight.shape[0])))
    if num_items_in_batch is None:
        return total / targets.numel()  # the mean over labelled tokens (nan when there is none, as the plain path)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def plain_causal_lm_loss(hidden, weight, labels=None, *, bias=None, num_items_in_batch=None, shift_labels=None, ignore_index=IGNORE_INDEX):
    """The reference: transformers' own ``ForCausalLMLoss`` over the full logits (tests and benchmarks)."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits = torch.nn.functional.linear(hidden, weight, bias)
    return ForCausalLMLoss(
        logits, labels, weight.shape[0], num_items_in_batch=num_items_in_batch, shift_labels=shift_labels, ignore_index=ignore_index
    )


# ---- wiring into a model -------------------------------------------------------------------

_UNSUPPORTED_CONFIG = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def causal_lm_of(model):
    """The transformers ``…ForCausalLM`` inside a PEFT wrapper (or the model itself)."""
    inner = model
    for _ in range(4):
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        else:
            break
    return inner


def unsupported_reason(model) -> str | None:
    """Why the fused loss cannot stand in for this model's own loss (None when it can)."""
    inner = causal_lm_of(model)
    head = getattr(inner, "lm_head", None)
    if not isinstance(head, torch.nn.Linear):
        return f"{type(inner).__name__} has no linear output head (lm_head)"
    if not isinstance(getattr(inner, "model", None), torch.nn.Module):
        return f"{type(inner).__name__} has no decoder at .model"
    config = getattr(inner, "config", None)
    for name in _UNSUPPORTED_CONFIG:
        value = getattr(config, name, None)
        if value not in (None, 1, 1.0):
            return f"{type(inner).__name__} scales or caps its logits ({name}={value})"
    if getattr(head, "weight", None) is None or head.weight.dim() != 2:
        return "the output head's weight is not a plain matrix (quantized head?)"
    return None


def enable_fused_loss(model, *, chunk_size: int | None = None, use_liger: bool = False) -> None:
    """Make the model's forward compute its loss with ``fused_causal_lm_loss`` when labels are given.

    The causal LM's instance ``forward`` is replaced (PEFT and DDP call it through their own
    forward, so gradient synchronisation and the Trainer's loss kwargs are unchanged). With
    labels it returns ``CausalLMOutputWithPast(loss=…, logits=None)``. Raises ``ValueError`` for
    an architecture it cannot serve (see ``unsupported_reason``) and ``RuntimeError`` when
    ``use_liger`` is asked without CUDA or without liger-kernel.
    """
    reason = unsupported_reason(model)
    if reason:
        raise ValueError(reason)
    inner = causal_lm_of(model)
    liger_loss = None
    if use_liger:
        liger_loss = _liger_loss()
        _apply_liger_kernels(inner)
    original = inner.forward
    size = int(chunk_size) if chunk_size else None

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None, **kwargs):
        if labels is None and kwargs.get("shift_labels") is None:
            return original(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs
            )
        from transformers.modeling_outputs import CausalLMOutputWithPast

        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        shift_labels = kwargs.pop("shift_labels", None)
        ignore_index = kwargs.pop("ignore_index", IGNORE_INDEX)
        kwargs.pop("logits_to_keep", None)
        kwargs.setdefault("use_cache", False)
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs
        )
        head = self.lm_head
        loss = fused_causal_lm_loss(
            outputs.last_hidden_state,
            head.weight,
            labels,
            bias=head.bias,
            num_items_in_batch=num_items_in_batch,
            shift_labels=shift_labels,
            ignore_index=ignore_index,
            chunk_size=size,
            liger_loss=liger_loss,
        )
        return CausalLMOutputWithPast(
            loss=loss, logits=None, hidden_states=getattr(outputs, "hidden_states", None), attentions=getattr(outputs, "attentions", None)
        )

    inner.forward = types.MethodType(forward, inner)
    inner._medportal_fused_loss = "liger" if use_liger else "chunked"


def _liger_loss():
    if not torch.cuda.is_available():
        raise RuntimeError("use_liger_kernel needs a CUDA GPU (Liger's kernels are Triton); set use_liger_kernel=false")
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError as exc:
        raise RuntimeError("use_liger_kernel needs liger-kernel (pip install liger-kernel)") from exc
    return LigerFusedLinearCrossEntropyLoss(reduction="sum", ignore_index=IGNORE_INDEX)


def _apply_liger_kernels(inner) -> None:
    """Liger's RMSNorm / RoPE / SwiGLU kernels on this model instance (the loss is ours to wire)."""
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=inner, cross_entropy=False, fused_linear_cross_entropy=False)
