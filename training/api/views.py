"""Training REST API (/api/v1/): base models, fine-tune jobs and their actions, presets.

Every MedPortal role reads; only admins write (register, create, cancel, retry, merge,
download). Reads never change a job: silent workers are reaped on the schedule
(``medportal.jobs.reap_silent``).
"""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.selectors_versions import access_version
from medportal.errors import InvalidInput
from medportal.params import id_params
from medportal.roles import ADMIN, ALL_ROLES, HasRole
from training.api.serializers import (
    AdapterMergeSerializer,
    BaseModelRegisterSerializer,
    BaseModelSerializer,
    FineTuneJobCreateSerializer,
    FineTuneJobDetailSerializer,
    FineTuneJobSerializer,
    MergeSerializer,
    PresetSerializer,
    RetrySerializer,
    job_detail_data,
)
from training.models import FineTuneJob
from training.selectors import base_model_get, base_model_list, job_get, job_list, job_snapshot, preset_list
from training.services.base_models import base_model_register
from training.services.jobs import (
    finetune_job_adapter_archive,
    finetune_job_cancel,
    finetune_job_create,
    finetune_job_merge,
    finetune_job_retry,
)


class _TrainingView(GenericAPIView):
    permission_classes = [HasRole]
    required_roles = ALL_ROLES
    write_roles = (ADMIN,)


def _detail(job: FineTuneJob) -> dict:
    job = job_get(pk=job.pk)
    return job_detail_data(job, job_snapshot(job))


# --------------------------------------------------------------------------- base models


class BaseModelListView(_TrainingView):
    """Registered base models (local Hugging Face folders); admins register new ones."""

    serializer_class = BaseModelSerializer

    def get_queryset(self):
        return base_model_list()

    @extend_schema(
        parameters=[OpenApiParameter("active", bool, description="Only active models.")],
        responses=BaseModelSerializer(many=True),
    )
    def get(self, request):
        active = request.query_params.get("active", "").lower() in ("1", "true", "yes")
        page = self.paginate_queryset(base_model_list(active_only=active))
        return self.get_paginated_response(BaseModelSerializer(page, many=True).data)

    @extend_schema(
        request=BaseModelRegisterSerializer,
        responses={201: BaseModelSerializer},
        description=(
            "Register a local model folder: it is inspected (config, tokenizer, chat template, parameter count) "
            "without loading weights."
        ),
    )
    def post(self, request):
        form = BaseModelRegisterSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        model = base_model_register(actor=request.user, **form.validated_data)
        return Response(BaseModelSerializer(model).data, status=status.HTTP_201_CREATED)


class BaseModelDetailView(_TrainingView):
    serializer_class = BaseModelSerializer

    def get(self, request, pk: int):
        return Response(BaseModelSerializer(base_model_get(pk=pk)).data)


# --------------------------------------------------------------------------- jobs


class JobListView(_TrainingView):
    """Fine-tune jobs, newest first; admins queue new ones."""

    serializer_class = FineTuneJobSerializer

    def get_queryset(self):
        return job_list()

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=list(FineTuneJob.Status.values), description="Only jobs in this status.")],
        responses=FineTuneJobSerializer(many=True),
    )
    def get(self, request):
        page = self.paginate_queryset(job_list(status=request.query_params.get("status") or None))
        return self.get_paginated_response(FineTuneJobSerializer(page, many=True).data)

    @extend_schema(
        request=FineTuneJobCreateSerializer,
        responses={201: FineTuneJobDetailSerializer},
        description=(
            "Queue a LoRA fine-tune on the gpu workers: the preset's settings updated with `overrides` "
            "(every bad setting is listed in error.details). Poll GET /api/v1/finetune-jobs/{id}/ for progress."
        ),
    )
    def post(self, request):
        form = FineTuneJobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        version = _version(data["dataset_version"])
        model = _model(data["base_model"])
        job = finetune_job_create(
            actor=request.user,
            dataset_version=version,
            base_model=model,
            preset=data["preset"],
            overrides=data["overrides"],
            on_worker_death=data["on_worker_death"],
            evaluate_after=data["evaluate_after"],
        )
        return Response(_detail(job), status=status.HTTP_201_CREATED)


def _version(pk):
    from django.http import Http404

    try:
        return access_version(None, pk)
    except Http404:
        raise InvalidInput(f"No dataset version #{pk}.", details={"dataset_version": "unknown id"}) from None


def _model(pk):
    from django.http import Http404

    try:
        return base_model_get(pk=pk)
    except Http404:
        raise InvalidInput(f"No base model #{pk}.", details={"base_model": "unknown id"}) from None


class JobDetailView(_TrainingView):
    """A job's live state: progress, curves, log tail, template check, recipe."""

    serializer_class = FineTuneJobDetailSerializer

    def get(self, request, pk: int):
        job = job_get(pk=pk)
        return Response(job_detail_data(job, job_snapshot(job)))


class JobCancelView(_TrainingView):
    serializer_class = FineTuneJobDetailSerializer

    @extend_schema(
        request=None,
        responses={200: FineTuneJobDetailSerializer},
        description="A queued job is cancelled at once; a running one when its worker stops the training process (a few seconds).",
    )
    def post(self, request, pk: int):
        job = finetune_job_cancel(actor=request.user, job=job_get(pk=pk))
        return Response(_detail(job))


class JobRetryView(_TrainingView):
    serializer_class = FineTuneJobDetailSerializer

    @extend_schema(
        request=RetrySerializer,
        responses={200: FineTuneJobDetailSerializer},
        description="Queue a failed or cancelled job again; it resumes from its last checkpoint unless resume is false.",
    )
    def post(self, request, pk: int):
        form = RetrySerializer(data=request.data)
        form.is_valid(raise_exception=True)
        job = finetune_job_retry(actor=request.user, job=job_get(pk=pk), resume=form.validated_data["resume"])
        return Response(_detail(job))


class JobMergeView(_TrainingView):
    serializer_class = AdapterMergeSerializer

    @extend_schema(
        request=MergeSerializer,
        responses={202: AdapterMergeSerializer},
        description=(
            "Queue the merge of a succeeded job's adapter into its base model; the worker registers the standalone "
            "folder as a new base model. Poll GET /api/v1/finetune-jobs/{id}/ (`merges`) for its status."
        ),
    )
    def post(self, request, pk: int):
        form = MergeSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        merge = finetune_job_merge(actor=request.user, job=job_get(pk=pk), name=form.validated_data["name"])
        return Response(AdapterMergeSerializer(merge).data, status=status.HTTP_202_ACCEPTED)


class JobAdapterView(_TrainingView):
    """The adapter folder, its config and the training log as a .zip (admins)."""

    required_roles = (ADMIN,)

    @extend_schema(responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The adapter as a .zip")})
    def get(self, request, pk: int):
        path, filename = finetune_job_adapter_archive(actor=request.user, job=job_get(pk=pk))
        return FileResponse(path.open("rb"), as_attachment=True, filename=filename, content_type="application/zip")


# --------------------------------------------------------------------------- presets


class PresetListView(APIView):
    """The recipes of the job form, with every setting; with a base model and a dataset
    version, also the engine's estimate of GPU memory and time."""

    permission_classes = _TrainingView.permission_classes
    required_roles = ALL_ROLES

    @extend_schema(
        parameters=[
            OpenApiParameter("base_model", int, description="Base model id (for the estimate)."),
            OpenApiParameter("dataset_version", int, description="Dataset version id (for the estimate)."),
        ],
        responses=PresetSerializer(many=True),
    )
    def get(self, request):
        model = version = None
        ids = id_params(request.query_params, "base_model", "dataset_version")  # not an id: 400 naming it
        if ids["base_model"]:
            model = _model(ids["base_model"])
        if ids["dataset_version"]:
            version = _version(ids["dataset_version"])
        return Response(preset_list(base_model=model, dataset_version=version))
