"""Evaluation runs in the REST API (/api/v1/evaluations/): list, detail, report, samples, create,
create the base + tuned pair of a fine-tune, cancel.

Every MedPortal role reads; only admins create and cancel. Reads first fail runs whose worker went
silent (as the job API does), so a run is never shown running when nobody runs it. Mounted by
``training/api/urls.py`` (``*evaluations.urlpatterns``).
"""

from __future__ import annotations

from django.http import Http404
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from curation.selectors_versions import access_version
from medportal.errors import InvalidInput
from medportal.params import id_param, id_params
from medportal.roles import ADMIN, ALL_ROLES, HasRole
from training.models import EvalRun, EvalSample
from training.selectors import base_model_get, job_get
from training.selectors_eval import (
    METRIC_KEYS,
    SAMPLE_ORDERINGS,
    evaluation_data,
    evaluation_get,
    evaluation_list,
    evaluation_report,
    evaluation_samples,
    sample_data,
)
from training.services.evaluations import evaluation_cancel, evaluation_create, evaluation_pair_create

# --------------------------------------------------------------------------- serializers


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": True,
        "example": {"bleu-4": 12.3456, "rouge-1": 30.1, "rouge-2": 10.2, "rouge-l": 20.5, "count": 200},
    }
)
class SummaryField(serializers.DictField):
    """{"bleu-4", "rouge-1", "rouge-2", "rouge-l", "count"}, each score × 100."""


@extend_schema_field(
    {"type": "object", "additionalProperties": True, "example": {"max_new_tokens": 256, "temperature": 0.0, "batch_size": 8}}
)
class ParamsField(serializers.DictField):
    """Generation parameters: max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed,
    template, batch_size, cutoff_len, max_samples."""


class EvalRunSerializer(serializers.Serializer):
    """``training.selectors_eval.evaluation_data``."""

    id = serializers.IntegerField()
    label = serializers.CharField()
    status = serializers.ChoiceField(choices=EvalRun.Status.choices)
    status_label = serializers.CharField()
    dataset_version = serializers.IntegerField()
    dataset_version_name = serializers.CharField()
    split = serializers.ChoiceField(choices=EvalRun.Split.choices)
    base_model = serializers.IntegerField()
    base_model_name = serializers.CharField()
    job = serializers.IntegerField(allow_null=True, help_text="The fine-tune job whose adapter was evaluated; null = the base model alone.")
    group = serializers.CharField(allow_blank=True, help_text="Runs compared together share a group (base and tuned of one fine-tune).")
    mode = serializers.ChoiceField(choices=EvalRun.Mode.choices)
    mode_label = serializers.CharField()
    params = ParamsField()
    progress = serializers.FloatField(help_text="0..1")
    done_samples = serializers.IntegerField()
    total_samples = serializers.IntegerField()
    summary = SummaryField()
    by_department = serializers.DictField(child=SummaryField())
    speed = serializers.DictField(
        help_text=(
            "ttft_ms_p50, ttft_ms_p95, latency_ms_p50, latency_ms_p95, tokens_per_second (the speed test); "
            "samples_per_second, batch_tokens_per_second, generation_seconds, batch_size, concurrency, backend, timed_samples"
        )
    )
    backend = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)
    worker = serializers.CharField(allow_blank=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    version = serializers.IntegerField()
    can_cancel = serializers.BooleanField()


# The sample keys carry hyphens ("bleu-4"), as LLaMA-Factory names them: declared through type().
EvalSampleSerializer = type(
    "EvalSampleSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "One answer of a run with its scores (× 100).",
        "position": serializers.IntegerField(),
        "dataset_item": serializers.IntegerField(allow_null=True),
        "department": serializers.CharField(allow_blank=True),
        "prompt": serializers.CharField(allow_blank=True, help_text="The question (the user turn or turns)."),
        "reference": serializers.CharField(allow_blank=True),
        "prediction": serializers.CharField(allow_blank=True),
        **{key: serializers.FloatField() for key in METRIC_KEYS},
        "completion_tokens": serializers.IntegerField(),
        "latency_ms": serializers.FloatField(allow_null=True, help_text="Set for the answers timed by the speed test."),
    },
)


class EvalRunCreateSerializer(serializers.Serializer):
    dataset_version = serializers.IntegerField(help_text="Id of a frozen dataset version.")
    base_model = serializers.IntegerField(help_text="Id of a registered base model.")
    job = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="A succeeded fine-tune of that base model (its adapter)."
    )
    split = serializers.ChoiceField(choices=EvalRun.Split.choices, default="test")
    mode = serializers.ChoiceField(choices=EvalRun.Mode.choices, default="llamafactory")
    preset = serializers.CharField(required=False, allow_blank=True, default="", help_text="greedy (default) or vllm_infer.")
    params = ParamsField(required=False, default=dict)
    max_samples = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)
    group = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)


class EvalPairCreateSerializer(serializers.Serializer):
    job = serializers.IntegerField(help_text="A succeeded fine-tune job: its base model and its adapter are evaluated.")
    split = serializers.ChoiceField(choices=EvalRun.Split.choices, default="test")
    mode = serializers.ChoiceField(choices=EvalRun.Mode.choices, default="llamafactory")
    preset = serializers.CharField(required=False, allow_blank=True, default="")
    params = ParamsField(required=False, default=dict)
    max_samples = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)


class EvalPairSerializer(serializers.Serializer):
    group = serializers.CharField()
    base = EvalRunSerializer()
    tuned = EvalRunSerializer()


# --------------------------------------------------------------------------- views


class EvaluationPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class _EvaluationView(GenericAPIView):
    permission_classes = [HasRole]
    required_roles = ALL_ROLES
    write_roles = (ADMIN,)
    serializer_class = EvalRunSerializer
    pagination_class = EvaluationPagination


def _lookup(getter, pk, field: str, what: str):
    try:
        return getter(pk=pk)
    except Http404:
        raise InvalidInput(f"No {what} #{pk}.", details={field: "unknown id"}) from None


class EvaluationListView(_EvaluationView):
    """Evaluation runs, newest first; admins queue new ones."""

    def get_queryset(self):
        return evaluation_list()

    @extend_schema(
        parameters=[
            OpenApiParameter("dataset_version", int, description="Only runs on this dataset version."),
            OpenApiParameter("job", int, description="Only runs of this fine-tune job's adapter."),
            OpenApiParameter("group", str, description="Only runs of this comparison group."),
            OpenApiParameter("status", str, enum=list(EvalRun.Status.values), description="Only runs in this status."),
        ],
        responses=EvalRunSerializer(many=True),
    )
    def get(self, request):
        q = request.query_params
        filters = id_params(q, "dataset_version", "job")  # not an id: 400 naming the parameter
        runs = evaluation_list(group=q.get("group") or None, status=q.get("status") or None)
        if filters["dataset_version"]:
            runs = runs.filter(dataset_version_id=filters["dataset_version"])
        if filters["job"]:
            runs = runs.filter(job_id=filters["job"])
        page = self.paginate_queryset(runs)
        return self.get_paginated_response([evaluation_data(r) for r in page])

    @extend_schema(
        request=EvalRunCreateSerializer,
        responses={201: EvalRunSerializer},
        description=(
            "Queue an evaluation run on the gpu workers: the base model (+ the adapter of a succeeded job) answers the split; "
            "answers are scored with BLEU-4 / ROUGE. Bad parameters are listed in error.details."
        ),
    )
    def post(self, request):
        form = EvalRunCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        version = _lookup(lambda pk: access_version(None, pk), data["dataset_version"], "dataset_version", "dataset version")
        model = _lookup(base_model_get, data["base_model"], "base_model", "base model")
        job = _lookup(job_get, data["job"], "job", "fine-tune job") if data["job"] is not None else None
        run = evaluation_create(
            actor=request.user,
            dataset_version=version,
            base_model=model,
            job=job,
            split=data["split"],
            mode=data["mode"],
            preset=data["preset"],
            params=data["params"],
            max_samples=data["max_samples"],
            group=data["group"],
        )
        return Response(evaluation_data(evaluation_get(pk=run.pk)), status=status.HTTP_201_CREATED)


class EvaluationPairView(_EvaluationView):
    serializer_class = EvalPairSerializer

    @extend_schema(
        request=EvalPairCreateSerializer,
        responses={201: EvalPairSerializer},
        description="Queue the base-model and tuned-model runs of a succeeded fine-tune, in one comparison group.",
    )
    def post(self, request):
        form = EvalPairCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        job = _lookup(job_get, data["job"], "job", "fine-tune job")
        base, tuned = evaluation_pair_create(
            actor=request.user,
            job=job,
            split=data["split"],
            mode=data["mode"],
            preset=data["preset"],
            params=data["params"],
            max_samples=data["max_samples"],
        )
        body = {
            "group": base.group,
            "base": evaluation_data(evaluation_get(pk=base.pk)),
            "tuned": evaluation_data(evaluation_get(pk=tuned.pk)),
        }
        return Response(body, status=status.HTTP_201_CREATED)


class EvaluationDetailView(_EvaluationView):
    def get(self, request, pk: int):
        return Response(evaluation_data(evaluation_get(pk=pk)))


class EvaluationReportView(_EvaluationView):
    """The report of a run: metric cards against a baseline, departments, worst / best answers,
    speed, history, loss curves and ratings."""

    serializer_class = None

    @extend_schema(
        parameters=[OpenApiParameter("compare_to", int, description="Compare with this run (default: the other run of the group).")],
        responses={200: {"type": "object", "additionalProperties": True}},
    )
    def get(self, request, pk: int):
        run = evaluation_get(pk=pk)
        other = None
        compare_id = id_param(request.query_params, "compare_to")  # not an id: 400 naming it
        if compare_id:
            other = _lookup(evaluation_get, compare_id, "compare_to", "evaluation run")
        return Response(evaluation_report(run, compare_to=other))


class EvaluationCancelView(_EvaluationView):
    @extend_schema(
        request=None, responses={200: EvalRunSerializer}, description="Cancel a queued or running run (its worker stops within seconds)."
    )
    def post(self, request, pk: int):
        run = evaluation_cancel(actor=request.user, run=evaluation_get(pk=pk))
        return Response(evaluation_data(evaluation_get(pk=run.pk)))


class EvaluationSampleListView(_EvaluationView):
    """Every answer of a run with its scores, paginated."""

    serializer_class = EvalSampleSerializer
    queryset = EvalSample.objects.none()  # for the schema; get() reads through the selector

    @extend_schema(
        parameters=[
            OpenApiParameter("ordering", str, enum=list(SAMPLE_ORDERINGS), description="Default: position."),
            OpenApiParameter("department", str, description="Only samples of this department (empty = none)."),
        ],
        responses=EvalSampleSerializer(many=True),
    )
    def get(self, request, pk: int):
        run = evaluation_get(pk=pk)
        ordering = request.query_params.get("ordering") or "position"
        if ordering not in SAMPLE_ORDERINGS:
            raise InvalidInput(f"ordering is one of {', '.join(SAMPLE_ORDERINGS)}.", details={"ordering": "unknown ordering"})
        department = request.query_params.get("department")
        page = self.paginate_queryset(evaluation_samples(run, ordering=ordering, department=department))
        return self.get_paginated_response([sample_data(s) for s in page])


urlpatterns = [
    path("evaluations/", EvaluationListView.as_view(), name="api-evaluation-list"),
    path("evaluations/pairs/", EvaluationPairView.as_view(), name="api-evaluation-pair"),
    path("evaluations/<int:pk>/", EvaluationDetailView.as_view(), name="api-evaluation-detail"),
    path("evaluations/<int:pk>/report/", EvaluationReportView.as_view(), name="api-evaluation-report"),
    path("evaluations/<int:pk>/cancel/", EvaluationCancelView.as_view(), name="api-evaluation-cancel"),
    path("evaluations/<int:pk>/samples/", EvaluationSampleListView.as_view(), name="api-evaluation-samples"),
]
