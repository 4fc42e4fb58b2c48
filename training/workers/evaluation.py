"""What a ``gpu`` worker does with one evaluation run (kind "evaluation" of ``medportal.jobs``,
run by ``training.tasks.evaluation_task`` or ``run_evaluation --sync``).

``evaluation_run`` claims the run (``jobs.claim``: queued → running by one conditional UPDATE),
reads the split's frozen items, generates every answer — in this process with batched
generation (``training.engine.generation``), or, for a contender on an OpenAI-compatible server,
with concurrent requests — runs the response-speed test, scores every answer and stores the
samples and summaries in one transaction that ends with the conditional ``jobs.succeed``. The
run's suites beyond the reference answers (multiple choice, diagnosis, rubric judge) are scored by
``training.services.eval_suites.score_suites`` before that. Answers are stored as they are
generated (``EvalSample`` rows without scores yet), so a run whose worker was killed resumes —
queued again by the reaper — without generating the answers it already has. Every
write heartbeats and is conditional on "still running, this attempt": a run that was cancelled
(the kind cancels running runs at once) or reaped stops at its next heartbeat and writes
nothing more. A failure is stored on the row (``jobs.finish``).
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _

from curation.models import DatasetItem
from medportal import jobs
from training.models import EvalRun, EvalSample

logger = logging.getLogger(__name__)

KIND = "evaluation"
Status = EvalRun.Status
PROGRESS_GENERATION = 0.9  # progress when every answer is generated; the speed test fills the rest
BEAT_EVERY_S = 2.0
STORE_BATCH = 500
STORE_EVERY_BATCHES = 4  # in-process generation stores its answers every this many batches


def concurrency() -> int:
    """Requests in flight at once against an OpenAI-compatible server."""
    return max(1, int(getattr(settings, "MEDPORTAL_EVAL_CONCURRENCY", 8) or 8))


def speed_samples() -> int:
    """Answers streamed one at a time for the response-speed test."""
    return max(0, int(getattr(settings, "MEDPORTAL_EVAL_SPEED_SAMPLES", 20)))


class _Stopped(Exception):
    """The run is no longer ours (cancelled, reaped): stop and write nothing more."""


def evaluation_claim(*, run_id: int) -> EvalRun | None:
    """queued → running for this worker; None when the run is not queued (any more)."""
    if jobs.claim(KIND, run_id, progress=0.0, done_samples=0) is None:
        return None
    return EvalRun.objects.select_related("base_model", "job", "dataset_version").get(pk=run_id)


def evaluation_run(*, run_id: int, on_line=None) -> EvalRun | None:
    """Claim and run one evaluation to its end; returns the row as it ended (or as found).

    ``on_line`` (``run_evaluation --sync``) receives progress lines."""
    run = evaluation_claim(run_id=run_id)
    if run is None:
        logger.info("evaluation run %s: nothing to claim (not queued)", run_id)
        return EvalRun.objects.filter(pk=run_id).first()
    _Evaluation(run, on_line=on_line).execute()
    return EvalRun.objects.filter(pk=run_id).first()


def eval_samples_read(run: EvalRun) -> list[dict]:
    """The items the run answers, in split order (at most ``max_samples``): ``{"item_id",
    "position", "department", "messages" (ending with the reference answer), "prompt",
    "reference"}``."""
    from curation.exports.base import alpaca_record
    from training.engine.templates import records_to_messages

    limit = (run.params or {}).get("max_samples")
    shots = mcq_shots(run) if int((run.params or {}).get("mcq_shots") or 0) and "mcq" in (run.suites or ()) else {}
    rows = (
        DatasetItem.objects.filter(version_id=run.dataset_version_id, split=run.split)
        .select_related("qa_pair__department")
        .only("pk", "position", "content", "qa_pair__department__name")
        .order_by("position", "pk")
    )
    if limit:
        rows = rows[: int(limit)]
    samples = []
    for position, item in enumerate(rows):
        content = item.content or {}
        record = alpaca_record(content)
        reference = str(record.get("output") or "")
        messages = records_to_messages({**record, "output": ""})
        prompt = "\n\n".join(str(m["content"]) for m in messages if m["role"] == "user")
        if shots:
            from training.services.eval_suites import mcq_item

            question = mcq_item(content)
            if question is not None:
                head = [m for m in messages[:1] if m["role"] == "system"]  # the shots follow a system prompt
                messages = [*head, *(shots.get(question["subject"]) or shots.get("", [])), *messages[len(head) :]]
        department = content.get("department")
        if department is None:
            pair_department = getattr(item.qa_pair, "department", None)
            department = pair_department.name if pair_department is not None else ""
        samples.append(
            {
                "item_id": item.pk,
                "position": position,
                "department": str(department or "")[:100],
                "messages": messages + ([{"role": "assistant", "content": reference}] if reference else []),
                "prompt": prompt,
                "reference": reference,
            }
        )
    return samples


def mcq_shots(run: EvalRun) -> dict[str, list[dict]]:
    """Few-shot turns for the mcq suite: ``params["mcq_shots"]`` solved questions (user: the
    question with its options, assistant: the answer as the item holds it) from the version's
    other splits — validation first, then train, then test (the "dev" rows) — per subject, and for
    "" the first ones of any subject. Never items of the evaluated split."""
    from training.services.eval_suites import mcq_item

    k = int((run.params or {}).get("mcq_shots") or 0)
    order = {"validation": 0, "train": 1, "test": 2}
    pool = sorted(
        DatasetItem.objects.filter(version_id=run.dataset_version_id).exclude(split=run.split).only("split", "position", "content"),
        key=lambda item: (order.get(item.split, 3), item.position),
    )
    shots: dict[str, list[dict]] = {}
    for item in pool:
        question = mcq_item(item.content or {})
        if question is None:
            continue
        turn = [{"role": "user", "content": item.content["instruction"]}, {"role": "assistant", "content": item.content["output"]}]
        for key in (question["subject"], ""):
            if len(shots.setdefault(key, [])) < 2 * k:
                shots[key] += turn
    return shots


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


class _Evaluation:
    def __init__(self, run: EvalRun, on_line=None):
        self.run = run
        self.on_line = on_line
        self.attempt = run.attempt
        self.last_beat = time.monotonic()
        self.params = dict(run.params or {})
        self.kept = 0  # answers kept from an earlier attempt
        self.total = 0

    # ---- writing -------------------------------------------------------------------

    def echo(self, line: str) -> None:
        if self.on_line is not None:
            try:
                self.on_line(line)
            except Exception:
                self.on_line = None

    def write(self, **fields) -> None:
        """One conditional UPDATE (still running, this claim) with a heartbeat; _Stopped if not ours."""
        changed = jobs.heartbeat(KIND, self.run.pk, self.attempt, **fields)
        self.last_beat = time.monotonic()
        if not changed:
            raise _Stopped()

    def beat(self) -> None:
        """A heartbeat when the last write is BEAT_EVERY_S old."""
        if time.monotonic() - self.last_beat >= BEAT_EVERY_S:
            self.write()

    def progress(self, done: int, total: int, share: float = PROGRESS_GENERATION) -> dict:
        return {"done_samples": done, "progress": round(share * done / max(1, total), 4)}

    # ---- generation ------------------------------------------------------------------

    def runnable(self):
        """The contender (training.runnables): base model, adapter or hosted model, with the run's template."""
        from training.runnables import runnable

        return runnable(self.run.base_model, self.run.job, template=self.params.get("template") or "default")

    def generation_params(self):
        from training.inference.base import GenerationParams

        keys = GenerationParams.__dataclass_fields__
        return GenerationParams.from_dict({k: v for k, v in self.params.items() if k in keys})

    def generate_local(self, backend, ref, samples: list[dict]) -> list[dict]:
        from training.inference.local import LocalBackend
        from training.engine.generation import GenerationStopped, generate_batched, load_model

        if isinstance(backend, LocalBackend):
            loaded = backend.cache.get(ref)  # the speed test streams from the same loaded model
            pair = (loaded.model, loaded.tokenizer)
        else:
            pair = load_model(ref.base_path, ref.adapter_path)
        total = len(samples)

        def should_stop() -> bool:
            """Asked at every generated token: a heartbeat every BEAT_EVERY_S, which also tells
            whether the run is still ours."""
            if time.monotonic() - self.last_beat < BEAT_EVERY_S:
                return False
            try:
                self.write()
            except _Stopped:
                return True
            return False

        p = self.params
        chunk = max(1, int(p["batch_size"])) * STORE_EVERY_BATCHES
        results: list[dict] = []
        try:
            # Chunk by chunk, each stored at once: a killed worker loses one chunk at most.
            for start in range(0, total, chunk):
                part = samples[start : start + chunk]
                done_before = len(results)

                def on_progress(event: dict, done_before=done_before) -> None:
                    done = self.kept + done_before + event["done"]
                    self.write(**self.progress(done, self.total))
                    self.echo(f"{done}/{self.total} answers ({event['elapsed_s']:.1f} s)")

                answers = generate_batched(
                    model_path=ref.base_path,
                    adapter_path=ref.adapter_path,
                    template=ref.template,
                    conversations=[s["messages"] for s in part],
                    max_new_tokens=int(p["max_new_tokens"]),
                    cutoff_len=int(p["cutoff_len"]),
                    batch_size=int(p["batch_size"]),
                    temperature=float(p["temperature"]),
                    top_p=float(p["top_p"]),
                    top_k=int(p["top_k"] or 0),
                    repetition_penalty=float(p["repetition_penalty"]),
                    seed=None if p.get("seed") is None else int(p["seed"]) + start,
                    on_progress=on_progress,
                    should_stop=should_stop,
                    loaded=pair,
                )
                self.store_answers(part, answers)
                results += answers
            return results
        except GenerationStopped:
            raise _Stopped() from None

    def generate_remote(self, backend, ref, samples: list[dict]) -> list[dict]:
        import threading

        from training.inference.base import StreamStats

        params = self.generation_params()
        cancel = threading.Event()
        total = len(samples)
        results: list[dict | None] = [None] * total

        def answer(index: int) -> dict:
            stats = StreamStats()
            messages = samples[index]["messages"]
            if messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            text = "".join(backend.stream(ref, messages, params, cancel=cancel, stats=stats))
            if cancel.is_set():
                raise _Stopped()
            return {
                "predict": text,
                "prompt_tokens": stats.prompt_tokens,
                "completion_tokens": stats.completion_tokens,
                "finish_reason": stats.finish_reason,
            }

        done = 0
        unstored: list[int] = []
        with ThreadPoolExecutor(max_workers=min(concurrency(), total) or 1, thread_name_prefix=f"eval-{self.run.pk}") as pool:
            pending = {pool.submit(answer, i): i for i in range(total)}
            try:
                while pending:
                    finished, _rest = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in finished:
                        index = pending.pop(future)
                        results[index] = future.result()
                        unstored.append(index)
                        done += 1
                    if finished and time.monotonic() - self.last_beat >= 0.5:
                        self.store_answers([samples[i] for i in unstored], [results[i] for i in unstored])
                        unstored = []
                        self.write(**self.progress(self.kept + done, self.total))
                    else:
                        self.beat()
                self.store_answers([samples[i] for i in unstored], [results[i] for i in unstored])
            except BaseException:
                cancel.set()
                for future in pending:
                    future.cancel()
                raise
        self.write(**self.progress(self.kept + done, self.total))
        return results  # type: ignore[return-value]

    def speed_test(self, backend, ref, samples: list[dict]) -> tuple[dict, dict[int, float]]:
        """Stream the first N answers one at a time: TTFT, latency per answer, tokens/s."""
        from training.inference.base import StreamStats
        from training.engine.generation import percentile

        params = self.generation_params()
        n = min(speed_samples(), len(samples))
        ttfts: list[float] = []
        latencies: list[float] = []
        decode_tokens = 0
        decode_seconds = 0.0
        by_position: dict[int, float] = {}
        for k in range(n):
            sample = samples[k]
            messages = sample["messages"][:-1] if sample["messages"][-1]["role"] == "assistant" else sample["messages"]
            stats = StreamStats()
            for _piece in backend.stream(ref, messages, params, stats=stats):
                pass
            if stats.finished_at is None:
                stats.finished_at = time.perf_counter()
            latency = stats.finished_at - stats.started
            latencies.append(latency)
            by_position[sample["position"]] = round(latency * 1000.0, 2)
            if stats.ttft_s is not None:
                ttfts.append(stats.ttft_s)
            if stats.first_token_at is not None and stats.completion_tokens >= 2:
                decode_tokens += stats.completion_tokens - 1
                decode_seconds += stats.finished_at - stats.first_token_at
            self.write(progress=round(PROGRESS_GENERATION + (1 - PROGRESS_GENERATION) * 0.9 * (k + 1) / n, 4))
            self.echo(f"speed test {k + 1}/{n}: {latency * 1000:.0f} ms")
        speed = {
            "ttft_ms_p50": _ms(percentile(ttfts, 50)),
            "ttft_ms_p95": _ms(percentile(ttfts, 95)),
            "latency_ms_p50": _ms(percentile(latencies, 50)),
            "latency_ms_p95": _ms(percentile(latencies, 95)),
            "tokens_per_second": _round(decode_tokens / decode_seconds) if decode_seconds > 0 else None,
            "timed_samples": n,
        }
        return speed, by_position

    # ---- storing -----------------------------------------------------------------------

    def store_answers(self, samples: list[dict], results: list[dict]) -> None:
        """Keep generated answers (no scores yet) while the run is ours: a later attempt of the
        run reuses them instead of generating them again."""
        if not samples:
            return
        rows = [self.sample_row(sample, result) for sample, result in zip(samples, results, strict=True)]
        with transaction.atomic():
            if not jobs.mine(KIND, self.run.pk, self.attempt).select_for_update().exists():
                raise _Stopped()
            EvalSample.objects.bulk_create(rows, ignore_conflicts=True)

    def sample_row(self, sample: dict, result: dict, **scores) -> EvalSample:
        """The run's EvalSample for one prompt and its answer (``scores``: the metric fields)."""
        return EvalSample(
            run_id=self.run.pk,
            position=sample["position"],
            dataset_item_id=sample["item_id"],
            department=sample["department"],
            prompt=sample["prompt"],
            reference=sample["reference"],
            prediction=result["predict"],
            completion_tokens=int(result.get("completion_tokens") or 0),
            **scores,
        )

    def kept_answers(self, samples: list[dict]) -> dict[int, dict]:
        """{position: result} of the answers an earlier attempt of this run stored, for the
        positions that still hold the same item."""
        items = {s["position"]: s["item_id"] for s in samples}
        kept = {}
        for row in EvalSample.objects.filter(run_id=self.run.pk).only("position", "dataset_item_id", "prediction", "completion_tokens"):
            if items.get(row.position) == row.dataset_item_id:
                kept[row.position] = {"predict": row.prediction, "completion_tokens": row.completion_tokens, "kept": True}
        return kept

    def score(self, samples: list[dict], results: list[dict], latencies: dict[int, float]) -> tuple[dict, dict, list[EvalSample]]:
        """(summary, per-department summaries, sample rows) of the answers."""
        from training.engine.metrics import score_pairs, summarize

        predictions = [r["predict"] for r in results]
        references = [s["reference"] for s in samples]
        scored = score_pairs(predictions, references, mode=self.run.mode)
        per_department: dict[str, list[dict]] = {}
        rows = []
        for sample, result, scores in zip(samples, results, scored["per_sample"], strict=True):
            per_department.setdefault(sample["department"], []).append(scores)
            rows.append(
                self.sample_row(
                    sample,
                    result,
                    bleu4=scores["bleu-4"],
                    rouge1=scores["rouge-1"],
                    rouge2=scores["rouge-2"],
                    rougel=scores["rouge-l"],
                    latency_ms=latencies.get(sample["position"]),
                )
            )
        by_department = {name: summarize(values) for name, values in sorted(per_department.items())}
        return scored["summary"], by_department, rows

    def score_suites(self, samples: list[dict], results: list[dict], rows: list[EvalSample]) -> dict:
        """The run's suites beyond the reference answers (training.services.eval_suites): each
        row's ``suite_scores`` and the run's summary. The judge heartbeats after every answer."""
        from training.services.eval_suites import score_suites

        if not [s for s in (self.run.suites or ["reference"]) if s != "reference"]:
            return {}
        self.echo(f"scoring suites {', '.join(self.run.suites)}")
        per_sample, suite_summary = score_suites(
            self.run, samples, [r["predict"] for r in results], beat=lambda done: self.beat()
        )
        for row, scores in zip(rows, per_sample, strict=True):
            row.suite_scores = scores
        return suite_summary

    def succeed(self, rows: list[EvalSample], **fields) -> None:
        """Store the samples and the outcome in one transaction, if the run is still ours."""
        with transaction.atomic():
            # Lock the row: a cancel cannot slip in between the check and the writes.
            if not jobs.mine(KIND, self.run.pk, self.attempt).select_for_update().exists():
                raise _Stopped()
            EvalSample.objects.filter(run_id=self.run.pk).delete()
            for start in range(0, len(rows), STORE_BATCH):
                EvalSample.objects.bulk_create(rows[start : start + STORE_BATCH])
            if not jobs.succeed(KIND, self.run.pk, self.attempt, **fields):
                raise _Stopped()

    def fail(self, error: str) -> None:
        jobs.finish(KIND, self.run.pk, self.attempt, Status.FAILED, error)

    # ---- entry -------------------------------------------------------------------------

    def execute(self) -> None:
        from training.runnables import external_messages

        try:
            samples = eval_samples_read(self.run)
            if not samples:
                self.fail(_("The %(split)s split of this dataset version is empty.") % {"split": self.run.split})
                return
            total = len(samples)
            contender = self.runnable()
            backend, ref = contender.backend(), contender.ref
            if contender.external:  # identifiers masked, one audit event: never an unmasked item out
                sent = external_messages(contender, [x["messages"] for x in samples], actor=self.run.created_by, purpose="evaluation", target=self.run)
                samples = [{**x, "messages": m} for x, m in zip(samples, sent, strict=True)]
            self.write(total_samples=total, backend=backend.name[:20])
            self.total = total
            kept = self.kept_answers(samples)
            self.kept = len(kept)
            todo = [x for x in samples if x["position"] not in kept]
            if kept:
                self.echo(f"resuming: {len(kept)} answers kept from an earlier attempt, {len(todo)} to generate")
            self.echo(f"evaluating {total} samples with the {backend.name} backend")
            remote = backend.name != "local"
            t0 = time.perf_counter()
            fresh = (self.generate_remote(backend, ref, todo) if remote else self.generate_local(backend, ref, todo)) if todo else []
            generation_s = time.perf_counter() - t0
            by_position = {**kept, **{x["position"]: r for x, r in zip(todo, fresh, strict=True)}}
            results = [by_position[x["position"]] for x in samples]
            completion_tokens = sum(int(r.get("completion_tokens") or 0) for r in fresh)
            speed, latencies = self.speed_test(backend, ref, samples)
            generated = len(todo)
            speed.update(
                {
                    "samples_per_second": _round(generated / generation_s, 3) if generation_s > 0 and generated else None,
                    "batch_tokens_per_second": _round(completion_tokens / generation_s) if generation_s > 0 and generated else None,
                    "generation_seconds": _round(generation_s, 3),
                    "batch_size": int(self.params.get("batch_size") or 1) if not remote else concurrency(),
                    "concurrency": concurrency() if remote else 1,
                    "backend": backend.name,
                    "resumed_answers": len(kept),
                }
            )
            summary, by_department, rows = self.score(samples, results, latencies)
            suite_summary = self.score_suites(samples, results, rows)
            self.succeed(
                rows,
                summary=summary,
                by_department=by_department,
                speed=speed,
                suite_summary=suite_summary,
                progress=1.0,
                done_samples=total,
            )
            self.echo(
                "done: "
                + ", ".join(f"{k} {summary[k]:.2f}" for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"))
                + f" over {total} samples"
            )
        except _Stopped:
            logger.info("evaluation run %s: no longer running (cancelled or reaped); stopped", self.run.pk)
            self.echo("stopped: the run was cancelled or taken over")
        except Exception as exc:
            logger.exception("evaluation run %s failed", self.run.pk)
            message = f"{type(exc).__name__}: {exc}" if not str(exc).startswith(type(exc).__name__) else str(exc)
            self.fail(message)
            self.echo(f"failed: {message}")


__all__ = ["concurrency", "eval_samples_read", "evaluation_claim", "evaluation_run", "speed_samples"]
