"""/api/v1/diagnose/: structured patient input → a diagnosis suggestion.

The input (patient information, symptoms, test results) goes through the seed's
``medical_inquiry`` template (患者信息 / 症状描述 / 检查结果 → 诊断建议) to the chosen model:
a registered base model, or an adapter (``"NAME:JOB_ID"``). Plain JSON, or server-sent events
with ``"stream": true``. Any MedPortal role; throttled per user (MEDPORTAL_DIAGNOSE_RATE).
With a ``reference`` (a disease id of the knowledge graph) the inquiry is also kept as a case in
review, which the evaluation's diagnosis suite scores once it is approved and frozen.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.http import StreamingHttpResponse
from django.urls import path, reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from training.inference import GenerationParams, InferenceError, ParamsError, StreamStats
from training.runnables import Runnable, external_messages, runnable
from medportal.errors import InvalidInput
from medportal.params import parse_id

DISCLAIMER = "本建议由模型生成，仅供参考，不能替代医生面诊；请以医生诊断为准。"
TEMPLATE = "medical_inquiry"


class DiagnoseRequest(serializers.Serializer):
    patient_info = serializers.CharField(required=False, allow_blank=True, max_length=4000, help_text="患者信息: age, sex, history …")
    symptoms = serializers.CharField(max_length=8000, help_text="症状描述: the presenting complaint and its course.")
    test_results = serializers.CharField(required=False, allow_blank=True, max_length=8000, help_text="检查结果: examination and test results.")
    model = serializers.CharField(
        required=False, allow_blank=True, help_text="A registered base-model name, or 'NAME:JOB_ID' for a fine-tuned adapter; default: the server's choice."
    )
    reference = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text=(
            "The known diagnosis, as a disease id of the knowledge graph (ORPHA:558, OMIM:154700, CCRD:1 …). When given, the "
            "inquiry is kept as a case and submitted for review; approved and frozen, it is an item of the evaluation's "
            "diagnosis suite."
        ),
    )
    reference_answer = serializers.CharField(
        required=False, allow_blank=True, max_length=8000, help_text="The case's reference answer; default: the disease's name and id."
    )
    stream = serializers.BooleanField(default=False, help_text="Answer as server-sent events (token by token).")
    max_new_tokens = serializers.IntegerField(required=False, min_value=1, max_value=4096)
    temperature = serializers.FloatField(required=False, min_value=0, max_value=5)
    top_p = serializers.FloatField(required=False, min_value=0.01, max_value=1)
    top_k = serializers.IntegerField(required=False, min_value=0)
    repetition_penalty = serializers.FloatField(required=False, min_value=0.5, max_value=3)
    seed = serializers.IntegerField(required=False, min_value=0)


class DiagnoseStats(serializers.Serializer):
    ttft_ms = serializers.FloatField(allow_null=True)
    tokens_per_second = serializers.FloatField(allow_null=True)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    finish_reason = serializers.CharField()
    total_ms = serializers.FloatField(allow_null=True)


class DiagnoseCase(serializers.Serializer):
    id = serializers.IntegerField(help_text="The QA pair that keeps the case.")
    status = serializers.CharField()
    url = serializers.CharField(help_text="Its page.")
    disease = serializers.CharField()
    identifiers = serializers.ListField(child=serializers.CharField(), help_text="Kinds of identifiers found (masked before any export).")


class DiagnoseResponse(serializers.Serializer):
    diagnosis = serializers.CharField()
    case = DiagnoseCase(allow_null=True, help_text="The case kept for review when a reference was given; null otherwise.")
    model = serializers.CharField()
    external = serializers.BooleanField(help_text="The model runs on an external (hosted) endpoint.")
    template = serializers.CharField()
    disclaimer = serializers.CharField()
    stats = DiagnoseStats()


def resolve_model(name: str) -> Runnable:
    """The runnable model (with the medical_inquiry template), or InvalidInput."""
    from chat.selectors import contestants
    from training.models import BaseModel, FineTuneJob

    name = (name or settings.MEDPORTAL_DIAGNOSE_MODEL or "").strip()
    if not name:
        options = contestants()
        if not options:
            raise InvalidInput("No model is registered yet.")
        adapters = [c for c in options if c.job is not None]
        choice = adapters[0] if adapters else options[0]
        base, job = choice.base_model, choice.job
    else:
        base_name, _, job_id = name.partition(":")
        base = BaseModel.objects.filter(name=base_name, is_active=True).select_related("endpoint").first()
        if base is None:
            raise InvalidInput(f"No active base model named {base_name!r}.", details={"model": "unknown"})
        job = None
        if job_id:
            job = FineTuneJob.objects.filter(pk=parse_id(job_id) or -1).select_related("base_model").first()
            if job is None:
                raise InvalidInput(f"No fine-tune job #{job_id}.", details={"model": "unknown adapter"})
    try:
        return runnable(base, job, template=TEMPLATE)
    except InferenceError as exc:
        raise InvalidInput(str(exc), details={"model": "unavailable"}) from None


def model_label(run: Runnable) -> str:
    """The name a client passes back: ``NAME`` or ``NAME:JOB_ID``."""
    return run.base_model.name if run.job is None else f"{run.base_model.name}:{run.job.pk}"


def keep_case(user, values: dict) -> dict | None:
    """The inquiry with its reference as a case in review (``qa_pair_create_from_inquiry``), kept
    before the model is asked so that a failing model loses nothing; None without a reference."""
    if not (values.get("reference") or "").strip():
        return None
    from curation.services.editing import qa_pair_create_from_inquiry
    from curation.services.review import identifier_kind_labels

    pair = qa_pair_create_from_inquiry(
        author=user,
        patient_info=values.get("patient_info", ""),
        symptoms=values["symptoms"],
        test_results=values.get("test_results", ""),
        reference=values["reference"],
        reference_answer=values.get("reference_answer", ""),
    )
    return {
        "id": pair.pk,
        "status": pair.status,
        "url": reverse("curation:pair-detail", args=[pair.pk]),
        "disease": pair.disease_codes[0],
        "identifiers": identifier_kind_labels(pair.identifiers),
    }


def inquiry_messages(data: dict) -> list[dict]:
    """The structured input as one user turn the medical_inquiry template reads: a JSON object of
    its three fields (see training.engine.templates.medical_inquiry_fields)."""
    fields = {k: (data.get(k) or "").strip() for k in ("patient_info", "symptoms", "test_results")}
    return [{"role": "user", "content": json.dumps(fields, ensure_ascii=False)}]


class DiagnoseView(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "diagnose"

    @extend_schema(
        operation_id="diagnose",
        summary="Diagnosis suggestion from structured patient input",
        description=(
            "Renders patient information, symptoms and test results with the `medical_inquiry` template and asks the "
            "chosen model (a base model, or `NAME:JOB_ID` for a fine-tuned adapter). With `stream: true` the answer comes "
            "as server-sent events: `data: {\"token\": …}` lines, then `data: {\"done\": true, \"diagnosis\", \"stats\", …}`. "
            "With `reference` (a disease id of the knowledge graph, e.g. ORPHA:558) the inquiry is also kept as a case and "
            "submitted for review before the model is asked (`case` in the answer); approved and frozen into a dataset "
            "version, it is an item of the evaluation's diagnosis suite. Throttled per user (HTTP 429 with Retry-After)."
        ),
        request=DiagnoseRequest,
        responses={
            200: OpenApiResponse(DiagnoseResponse, description="JSON, or text/event-stream when stream is true."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid input or no usable model."),
            429: OpenApiResponse(OpenApiTypes.OBJECT, description="Too many requests."),
            502: OpenApiResponse(OpenApiTypes.OBJECT, description="The model failed."),
        },
        examples=[
            OpenApiExample(
                "Inquiry",
                value={"patient_info": "男，45岁，吸烟20年", "symptoms": "反复咳嗽、咳痰3个月，近1周痰中带血", "test_results": "胸片示右上肺阴影"},
                request_only=True,
            )
        ],
        tags=["chat"],
    )
    def post(self, request):
        data = DiagnoseRequest(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        run = resolve_model(values.get("model", ""))
        label = model_label(run)
        knobs = {k: values[k] for k in ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed") if k in values}
        try:
            params = GenerationParams.from_dict({"max_new_tokens": 512, **knobs})
        except ParamsError as exc:
            raise InvalidInput("Invalid generation parameters.", details=exc.errors) from None
        try:
            [messages] = external_messages(run, [inquiry_messages(values)], actor=request.user, purpose="diagnose", target=run.base_model)
        except InferenceError as exc:
            raise InvalidInput(str(exc), details={"model": "unavailable"}) from None
        case = keep_case(request.user, values)
        backend, ref = run.backend(), run.ref
        if values["stream"]:
            return self._stream(backend, ref, label, messages, params, external=run.external, case=case)
        stats = StreamStats()
        try:
            text = backend.generate(ref, messages, params, stats=stats)
        except InferenceError as exc:
            return Response({"error": {"code": "inference", "message": str(exc), "details": {"case": case}}}, status=502)
        return Response(
            {
                "diagnosis": text,
                "case": case,
                "model": label,
                "external": run.external,
                "template": TEMPLATE,
                "disclaimer": DISCLAIMER,
                "stats": stats.as_dict(),
            }
        )

    def _stream(self, backend, ref, label, messages, params, *, external: bool, case: dict | None):
        def events():
            stats = StreamStats()
            parts = []
            try:
                for piece in backend.stream(ref, messages, params, stats=stats):
                    parts.append(piece)
                    yield f"data: {json.dumps({'token': piece}, ensure_ascii=False)}\n\n"
            except InferenceError as exc:
                yield f"data: {json.dumps({'error': {'code': 'inference', 'message': str(exc)}, 'case': case}, ensure_ascii=False)}\n\n"
                return
            done = {"done": True, "diagnosis": "".join(parts), "case": case, "model": label, "external": external, "template": TEMPLATE, "disclaimer": DISCLAIMER, "stats": stats.as_dict()}
            yield f"data: {json.dumps(done, ensure_ascii=False)}\n\n"

        response = StreamingHttpResponse(events(), content_type="text/event-stream; charset=utf-8")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


urlpatterns = [path("diagnose/", DiagnoseView.as_view(), name="api-diagnose")]
