"""Prompt templates: how a conversation becomes training ids and labels, and the same prompt at serving time.

One rendering serves both sides. A conversation is rendered into segments (prompt text, answer text,
prompt text, answer text, ...); training encodes them segment by segment (as LLaMA-Factory does) and
masks every prompt segment; generation (``render_prompt``) renders the same segments up to the point
where the model must answer. So the ids a fine-tuned model was trained to continue are the ids it is
given in chat, evaluation and the API — ``template_fingerprint`` lets serving check that it renders
exactly what training rendered. See docs/models-and-templates.md.

Templates:
- ``default``: the tokenizer's own chat template (``apply_chat_template`` with ``enable_thinking=False``,
  which Qwen3 templates read and the others ignore). Answer spans are found by rendering the conversation
  once with placeholders and once for real.
- ``qwen3``: Qwen3's ChatML in non-thinking mode, as Qwen3's template renders it with
  ``enable_thinking=False``: the answered (last) turn and the generation prompt carry the empty block
  ``<think>\\n\\n</think>\\n\\n`` in the prompt part (never trained on); earlier assistant turns are
  rendered without it.
- ``llama3``: Llama 3 headers (``<|begin_of_text|>``, ``<|start_header_id|>``, ``<|eot_id|>``).
- ``alpaca``: ``### Instruction:`` / ``### Response:``, the answer ends with the tokenizer's eos token.
- ``medical_inquiry``: 患者信息 / 症状描述 / 检查结果 → 诊断建议 (see ``medical_inquiry_fields``).

Named templates that need control tokens (llama3, qwen3) raise ``TemplateError`` when the tokenizer
does not have them as single tokens: spelling them out as text would teach a model to type
``<|eot_id|>`` letter by letter and never stop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TEMPLATE_NAMES = ("default", "llama3", "qwen3", "alpaca", "medical_inquiry")
IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


class TemplateError(ValueError):
    """A conversation that cannot be rendered with this template and tokenizer (the message says why)."""


# --------------------------------------------------------------------------------------------------
# medical_inquiry fields

MEDICAL_FIELDS = (("patient_info", "患者信息"), ("symptoms", "症状描述"), ("test_results", "检查结果"))
MEDICAL_ANSWER_LABEL = "诊断建议"
MEDICAL_EMPTY_FIELD = "无"
MEDICAL_DEFAULT_SYSTEM = "你是一名经验丰富的医生。请根据患者信息、症状描述和检查结果给出诊断建议。"


def medical_inquiry_fields(content: str | Mapping[str, Any]) -> dict[str, str]:
    """The three fields of a ``medical_inquiry`` user turn.

    A mapping (or a string holding a JSON object) with any of ``patient_info`` / ``symptoms`` /
    ``test_results`` (or the Chinese labels 患者信息 / 症状描述 / 检查结果) fills those fields; any other
    string — a plain question — is the symptom description. Missing or empty fields read "无".
    A JSON object or mapping with other keys is refused, so that no part of an inquiry is silently dropped.
    """
    data: Mapping[str, Any] | None = None
    if isinstance(content, Mapping):
        data = content
    elif isinstance(content, str) and content.lstrip().startswith("{"):
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and any(k in parsed for pair in MEDICAL_FIELDS for k in pair):
            data = parsed
    elif not isinstance(content, str):
        raise TemplateError(f"a medical_inquiry user turn is a string or a mapping of fields, not {type(content).__name__}")
    if data is None:
        return {"patient_info": MEDICAL_EMPTY_FIELD, "symptoms": content, "test_results": MEDICAL_EMPTY_FIELD}  # type: ignore[dict-item]
    known = {k for pair in MEDICAL_FIELDS for k in pair}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise TemplateError(
            f"medical_inquiry fields are patient_info, symptoms and test_results (or 患者信息, 症状描述, 检查结果); unknown: {', '.join(unknown)}"
        )
    fields = {}
    for key, label in MEDICAL_FIELDS:
        value = data.get(key, data.get(label))
        text = "" if value is None else str(value).strip()
        fields[key] = text or MEDICAL_EMPTY_FIELD
    return fields


def _medical_user(content: str | Mapping[str, Any]) -> str:
    fields = medical_inquiry_fields(content)
    lines = [f"{label}：{fields[key]}" for key, label in MEDICAL_FIELDS]
    return "\n".join(lines) + f"\n{MEDICAL_ANSWER_LABEL}：\n"


# --------------------------------------------------------------------------------------------------
# named templates

_CONTENT = "{content}"


@dataclass(frozen=True)
class _Format:
    """A named template as LLaMA-Factory writes them: slots with ``{content}``, plus what they need."""

    prefix: str = ""  # once, before everything (e.g. a BOS token)
    system: str = _CONTENT
    user: str = _CONTENT  # ends where the model starts answering
    assistant: str = _CONTENT  # the answer and its end-of-turn text: all of it is trained on
    answer_prefix: str = ""  # prompt text before the LAST answer only (and in the generation prompt)
    default_system: str = ""
    control_tokens: tuple[str, ...] = ()  # must each be one token of the tokenizer
    uses_eos: bool = False


_NAMED: dict[str, _Format] = {
    "qwen3": _Format(
        system="<|im_start|>system\n{content}<|im_end|>\n",
        user="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
        assistant="{content}<|im_end|>\n",
        answer_prefix="<think>\n\n</think>\n\n",
        control_tokens=("<|im_start|>", "<|im_end|>"),
    ),
    "llama3": _Format(
        prefix="<|begin_of_text|>",
        system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant="{content}<|eot_id|>",
        control_tokens=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    "alpaca": _Format(
        system="{content}\n\n",
        user="### Instruction:\n{content}\n\n### Response:\n",
        assistant="{content}{eos}\n\n",
        default_system="Below is an instruction that describes a task. Write a response that appropriately completes the request.",
        uses_eos=True,
    ),
    "medical_inquiry": _Format(
        system="{content}\n\n",
        user=_CONTENT,  # filled by _medical_user
        assistant="{content}{eos}\n\n",
        default_system=MEDICAL_DEFAULT_SYSTEM,
        uses_eos=True,
    ),
}


def _fill(slot: str, content: str, eos: str = "") -> str:
    return slot.replace("{eos}", eos).replace(_CONTENT, content)


def _is_single_token(tokenizer, token: str) -> bool:
    return len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1


def _check_named(tokenizer, name: str, fmt: _Format) -> str:
    """The eos text the template uses ('' when none); raises when the tokenizer lacks a control token."""
    missing = [t for t in fmt.control_tokens if not _is_single_token(tokenizer, t)]
    if missing:
        raise TemplateError(
            f"template {name!r} needs the special tokens {', '.join(missing)}, which this tokenizer does not have; "
            "use the 'default' template (the model's own chat template) or a template written for this model"
        )
    if not fmt.uses_eos:
        return ""
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise TemplateError(f"template {name!r} ends every answer with the tokenizer's eos token, and this tokenizer has none")
    return str(eos)


# --------------------------------------------------------------------------------------------------
# messages


def _check_template(template: str) -> None:
    if template not in TEMPLATE_NAMES:
        raise TemplateError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATE_NAMES)}")


def _normalise(messages: Sequence[Mapping[str, Any]], template: str) -> tuple[str | None, list[tuple[Any, str | None]]]:
    """(system or None, [(user content, answer or None), ...]); only the last turn may lack an answer."""
    if not messages:
        raise TemplateError("the conversation is empty")
    items = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise TemplateError(f"message {index} is not a {{'role', 'content'}} mapping")
        role, content = message["role"], message.get("content")
        if role not in ROLES:
            raise TemplateError(f"message {index} has the role {role!r}; roles are system, user and assistant")
        structured_user = template == "medical_inquiry" and role == "user" and isinstance(content, Mapping)
        if not isinstance(content, str) and not structured_user:
            raise TemplateError(f"message {index} ({role}) has no text content")
        items.append((role, content))
    system = None
    if items[0][0] == "system":
        system = items[0][1]
        items = items[1:]
    turns: list[tuple[Any, str | None]] = []
    for position, (role, content) in enumerate(items):
        expected = "user" if position % 2 == 0 else "assistant"
        if role != expected:
            number = position + (system is not None)
            if role == "system":
                raise TemplateError(f"message {number} (system) is out of place: only the first message may be a system message")
            raise TemplateError(f"message {number} ({role}) is out of place: {expected} expected (turns alternate user, assistant)")
        if role == "user":
            turns.append((content, None))
        else:
            turns[-1] = (turns[-1][0], content)
    if not turns:
        raise TemplateError("the conversation has no user message")
    return system, turns


def template_chat_messages(template: str, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation for a server that applies its own chat template (a hosted model, whose
    tokenizer is not here): the named template's default system prompt when none is given, and
    ``medical_inquiry`` user turns written out as their labelled fields (患者信息：… 症状描述：…)."""
    _check_template(template)
    system, turns = _normalise(messages, template)
    if template == "default":
        return _as_messages(system, turns)
    fmt = _NAMED[template]
    system = system if system else (fmt.default_system or None)
    if template == "medical_inquiry":
        turns = [(_medical_user(question).rstrip("\n"), answer) for question, answer in turns]
    return _as_messages(system, turns)


def records_to_messages(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A LLaMA-Factory alpaca record (instruction, input, output, system, history) as chat messages.

    As LLaMA-Factory does: the user turn is instruction and input joined with a newline (empty parts
    skipped); ``history`` is ``[[question, answer], ...]`` before it; a non-empty system becomes the
    system message. The answer (``output``) is the last message when it is a non-empty string; without
    one the messages end with the user turn (a prompt to generate from).
    """
    messages: list[dict[str, Any]] = []
    system = record.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for turn in record.get("history") or ():
        if not isinstance(turn, (list, tuple)) or len(turn) != 2:
            raise TemplateError("history is a list of [question, answer] pairs")
        messages.append({"role": "user", "content": "" if turn[0] is None else str(turn[0])})
        messages.append({"role": "assistant", "content": "" if turn[1] is None else str(turn[1])})
    parts = [record.get("instruction"), record.get("input")]
    messages.append({"role": "user", "content": "\n".join(str(p) for p in parts if p)})
    output = record.get("output")
    if isinstance(output, (list, tuple)):
        raise TemplateError("output is a list (preference data): supervised fine-tuning needs one answer")
    if output is not None and str(output) != "":
        messages.append({"role": "assistant", "content": str(output)})
    return messages


# --------------------------------------------------------------------------------------------------
# rendering into segments


def _named_segments(tokenizer, template: str, system: str | None, turns: list[tuple[Any, str | None]]) -> list[tuple[str, bool]]:
    """[(text, trained), ...] — prompt pieces untrained, answers (with their end-of-turn text) trained.

    When the last turn has no answer, the last segment is the generation prompt.
    """
    fmt = _NAMED[template]
    eos = _check_named(tokenizer, template, fmt)
    head = fmt.prefix
    system_text = system if system else fmt.default_system
    if system_text:
        if fmt.system.startswith(_CONTENT) and fmt.system != _CONTENT:
            system_text = system_text.rstrip("\n")  # alpaca-like: the slot adds the blank line
        head += _fill(fmt.system, system_text, eos)
    segments: list[tuple[str, bool]] = []
    for index, (question, answer) in enumerate(turns):
        user = _medical_user(question) if template == "medical_inquiry" else _fill(fmt.user, question, eos)
        prompt = (head if index == 0 else "") + user
        if index == len(turns) - 1:
            prompt += fmt.answer_prefix
        segments.append((prompt, False))
        if answer is not None:
            segments.append((_fill(fmt.assistant, answer, eos), True))
    return segments


_MARK = "@@MEDPORTAL-ANSWER-{}@@"


def _chat_template_render(tokenizer, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("this model has no chat template: choose a named template (" + ", ".join(TEMPLATE_NAMES[1:]) + ")")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=False)
    if not isinstance(text, str):  # a batch of one, from older versions
        text = text[0]
    return text


def _as_messages(system: str | None, turns: list[tuple[Any, str | None]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
    for question, answer in turns:
        messages.append({"role": "user", "content": question})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return messages


def _default_segments(tokenizer, system: str | None, turns: list[tuple[Any, str | None]]) -> list[tuple[str, bool]]:
    """Segments of the tokenizer's own chat template.

    The conversation is rendered once with a placeholder for every answer, which shows the template's
    own text between answers (pieces[0], ..., pieces[n]), and once for real; the real answer texts are
    what lies between those pieces. Each answer is trained together with the end-of-turn text the
    template writes after an answer (what follows the last answer, e.g. ``<|im_end|>\\n``).
    """
    if turns[-1][1] is None:
        return [(_chat_template_render(tokenizer, _as_messages(system, turns), add_generation_prompt=True), False)]
    marked_turns = [(q, _MARK.format(i)) for i, (q, _) in enumerate(turns)]
    marked = _chat_template_render(tokenizer, _as_messages(system, marked_turns), add_generation_prompt=False)
    pieces: list[str] = []
    rest = marked
    for index in range(len(turns)):
        mark = _MARK.format(index)
        if rest.count(mark) != 1:
            raise TemplateError("the model's chat template does not write every assistant answer once, in order: choose a named template")
        before, rest = rest.split(mark)
        pieces.append(before)
    pieces.append(rest)
    real = _chat_template_render(tokenizer, _as_messages(system, turns), add_generation_prompt=False)
    if not real.startswith(pieces[0]) or not real.endswith(pieces[-1]):
        raise TemplateError("the model's chat template renders the conversation inconsistently: choose a named template")
    end_of_turn = pieces[-1]
    segments: list[tuple[str, bool]] = []
    position = len(pieces[0])
    prompt = pieces[0]
    for index in range(len(turns)):
        following = pieces[index + 1]
        last = index == len(turns) - 1
        end = len(real) - len(following) if last else real.find(following, position)
        if end < position:
            raise TemplateError("the model's chat template renders the conversation inconsistently: choose a named template")
        answer = real[position:end]
        common = 0
        while common < min(len(end_of_turn), len(following)) and end_of_turn[common] == following[common]:
            common += 1
        segments.append((prompt, False))
        segments.append((answer + following[:common], True))
        prompt = following[common:]
        position = end + len(following)
    # The prompt before the last answer must be exactly what generation is given.
    generation_prompt = _chat_template_render(
        tokenizer, _as_messages(system, [*turns[:-1], (turns[-1][0], None)]), add_generation_prompt=True
    )
    last_answer = max(i for i, (_, trained) in enumerate(segments) if trained)
    if "".join(text for text, _ in segments[:last_answer]) != generation_prompt:
        raise TemplateError(
            "the model's chat template does not render the generation prompt as the start of the answered turn "
            "(training and serving would differ): choose a named template"
        )
    return segments


def _segments(tokenizer, template: str, messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool]]:
    _check_template(template)
    system, turns = _normalise(messages, template)
    if template == "default":
        return _default_segments(tokenizer, system, turns)
    return _named_segments(tokenizer, template, system, turns)


# --------------------------------------------------------------------------------------------------
# public API


def render_prompt(tokenizer, template: str, messages: Sequence[Mapping[str, Any]]) -> str:
    """The text a model is given to answer the last user turn (``add_generation_prompt`` semantics).

    ``messages`` ends with a user turn; when it ends with an assistant turn, that answer is left out
    and the prompt for it is returned (handy for evaluation on records that carry the reference answer).
    Encode it with ``add_special_tokens=False`` (or use ``prompt_ids``): the text already holds every
    special token, BOS included, exactly as training saw it.
    """
    messages = list(messages)
    if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    segments = _segments(tokenizer, template, messages)
    return "".join(text for text, _ in segments)


def prompt_ids(tokenizer, template: str, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """``render_prompt`` encoded the way serving must encode it (no extra special tokens)."""
    return list(tokenizer(render_prompt(tokenizer, template, messages), add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer, template: str) -> list[int]:
    """Token ids that end an answer under ``template`` (for ``generate(eos_token_id=...)``).

    The first token of the template's end-of-turn text when it is a single special token
    (``<|im_end|>``, ``<|eot_id|>``, the eos token of alpaca-style templates), then the tokenizer's eos.
    """
    _check_template(template)
    probe_answer = "Probe answer."
    segments = _segments(
        tokenizer, template, [{"role": "user", "content": "Probe question?"}, {"role": "assistant", "content": probe_answer}]
    )
    answer = segments[max(i for i, (_, trained) in enumerate(segments) if trained)][0]
    end_of_turn = answer[answer.find(probe_answer) + len(probe_answer) :] if probe_answer in answer else ""
    ids: list[int] = []
    end_ids = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"] if end_of_turn else []
    special = set(getattr(tokenizer, "all_special_ids", ()) or ()) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    if end_ids and end_ids[0] in special:
        ids.append(end_ids[0])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


def _infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's split of the room left between a prompt and its answer."""
    if target_len * 2 < cutoff_len:  # a short answer is kept whole: cut the prompt
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:  # a short prompt is kept whole: cut the answer
        max_target_len = cutoff_len - source_len
    else:  # both long: in proportion
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def encode_conversation(tokenizer, template: str, messages: Sequence[Mapping[str, Any]], cutoff_len: int) -> dict[str, list[int]]:
    """Training ids and labels of a conversation that ends with an assistant answer.

    Labels are ``-100`` except on the tokens of every assistant answer and its end-of-turn text (history
    answers are trained on too, as in LLaMA-Factory). Segments are encoded one by one without extra
    special tokens, so the prompt part of the last turn is token for token ``prompt_ids`` of the
    conversation without its answer. Turns are cut to ``cutoff_len`` as LLaMA-Factory does: turn by
    turn, each (prompt, answer) pair gets the room left, a short answer is kept whole and the prompt
    loses its end, a short prompt is kept whole and the answer loses its end, otherwise both in proportion;
    turns that no longer fit are dropped.
    """
    if cutoff_len < 1:
        raise TemplateError("cutoff_len must be at least 1")
    _check_template(template)
    system, turns = _normalise(list(messages), template)
    if turns[-1][1] is None:
        raise TemplateError("the conversation must end with an assistant answer to train on")
    segments = _default_segments(tokenizer, system, turns) if template == "default" else _named_segments(tokenizer, template, system, turns)
    texts = [text for text, _ in segments]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    # Pair each answer with the prompt text before it (segments always end with an answer).
    pairs: list[tuple[list[int], list[int]]] = []
    source: list[int] = []
    for (_, trained), ids in zip(segments, encoded, strict=True):
        if trained:
            pairs.append((source, list(ids)))
            source = []
        else:
            source = source + list(ids)
    input_ids: list[int] = []
    labels: list[int] = []
    total = 0
    for source_ids, target_ids in pairs:
        if total >= cutoff_len:
            break
        source_len, target_len = _infer_seqlen(len(source_ids), len(target_ids), cutoff_len - total)
        input_ids += source_ids[:source_len] + target_ids[:target_len]
        labels += [IGNORE_INDEX] * source_len + target_ids[:target_len]
        total += source_len + target_len
    return {"input_ids": input_ids, "labels": labels}


PROBE_CONVERSATION: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "Probe system message. 探针系统消息。"},
    {"role": "user", "content": "First probe question? 第一个问题？"},
    {"role": "assistant", "content": "First probe answer. 第一个回答。"},
    {"role": "user", "content": "Second probe question? 第二个问题？"},
    {"role": "assistant", "content": "Second probe answer. 第二个回答。"},
)


def template_fingerprint(tokenizer, template: str) -> str:
    """sha256 (hex) of how ``template`` and ``tokenizer`` render and encode a fixed probe conversation.

    Covers the training rendering (segments and which are trained), the generation prompt and the
    token ids: two setups with the same fingerprint train and serve identically. Training stores it;
    serving recomputes it with its own tokenizer and template and compares.
    """
    probe = [dict(m) for m in PROBE_CONVERSATION]
    segments = _segments(tokenizer, template, probe)
    encoded = encode_conversation(tokenizer, template, probe, cutoff_len=1_000_000)
    payload = {
        "segments": [[text, trained] for text, trained in segments],
        "prompt": render_prompt(tokenizer, template, probe[:-1]),
        "input_ids": encoded["input_ids"],
        "labels": encoded["labels"],
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()
