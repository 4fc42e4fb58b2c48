"""Import API: POST /api/v1/imports/ (multipart), GET /api/v1/imports/ and /api/v1/imports/{id}/."""

from __future__ import annotations

import json

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from curation.importers import FORMATS, QA_FIELDS
from curation.models import ImportBatch
from curation.selectors_imports import access_import_batch, import_batch_list
from curation.services.imports import (
    import_batch_counts,
    import_batch_create,
    import_batch_dispatch,
)
from curation.validators import validate_text_encoding
from medportal.errors import InvalidInput
from medportal.roles import CURATOR, HasRole


@extend_schema_field({"type": "string", "enum": ["draft", "approved"], "default": "draft"})
class PairStatusField(serializers.ChoiceField):
    """Status of the imported pairs; "approved" is for admins only."""


class ImportBatchSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=ImportBatch.Status.choices, read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    created_by = serializers.CharField(source="created_by.get_username", read_only=True)
    counts = serializers.SerializerMethodField()
    progress_percent = serializers.IntegerField(read_only=True)

    class Meta:
        model = ImportBatch
        fields = [
            "id",
            "filename",
            "format",
            "encoding",
            "options",
            "status",
            "status_label",
            "progress",
            "created_by",
            "created_at",
            "finished_at",
            "rows_total",
            "rows_done",
            "progress_percent",
            "counts",
            "error",
        ]
        read_only_fields = fields

    def get_counts(self, batch) -> dict:
        return import_batch_counts(batch)


class ImportBatchDetailSerializer(ImportBatchSerializer):
    issues = serializers.JSONField(read_only=True, help_text='[{"row", "file", "kind": "skipped|error|duplicate", "message", "duplicate_of"?}]')

    class Meta(ImportBatchSerializer.Meta):
        fields = [*ImportBatchSerializer.Meta.fields, "issues"]
        read_only_fields = fields


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}, "example": {"instruction": "ask", "output": "answer"}})
class MappingField(serializers.Field):
    """A JSON object ``{"instruction": "ask", ...}``, given as an object or a JSON string."""

    default_error_messages = {"invalid": "Give the mapping as a JSON object of field → column, e.g. {{\"instruction\": \"ask\"}}."}

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not data.strip():
                return {}
            try:
                data = json.loads(data)
            except ValueError:
                self.fail("invalid")
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None))) for k, v in data.items()):
            self.fail("invalid")
        unknown = sorted(set(data) - set(QA_FIELDS))
        if unknown:
            raise serializers.ValidationError(f"Unknown field(s) {', '.join(unknown)}; expected {', '.join(QA_FIELDS)}.")
        return {k: v or "" for k, v in data.items()}

    def to_representation(self, value):
        return value


class ImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField()
    format = serializers.ChoiceField(choices=["", "auto", *FORMATS], required=False, allow_blank=True, default="")
    encoding = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=32,
        validators=[validate_text_encoding],
        help_text="A character encoding (utf-8, gb18030, big5, utf-16...); blank or auto: detect.",
    )
    mapping = MappingField(required=False, default=dict, help_text="JSON object: QA field → column name (CSV/TSV/XLSX).")
    department = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
    status = PairStatusField(choices=["draft", "approved"], required=False, default="draft")


class ImportListCreateView(GenericAPIView):
    """List your imports (admins: all), or upload a file to import."""

    permission_classes = [HasRole]
    required_roles = (CURATOR,)
    parser_classes = [MultiPartParser, FormParser]
    serializer_class = ImportBatchSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ImportBatch.objects.none()
        return import_batch_list(user=self.request.user)

    @extend_schema(responses=ImportBatchSerializer(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ImportBatchSerializer(page, many=True).data)

    @extend_schema(
        request={"multipart/form-data": ImportCreateSerializer},
        responses={201: ImportBatchDetailSerializer, 202: ImportBatchDetailSerializer},
        description=(
            "Small files are imported at once (201, with the report); larger files are queued for "
            "the worker (202): poll GET /api/v1/imports/{id}/ until status is succeeded or failed. "
            "A file-level error answers 400 with the batch id in error.details.batch_id."
        ),
    )
    def post(self, request):
        form = ImportCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        upload = data["file"]
        batch = import_batch_create(
            user=request.user,
            path_or_upload=upload,
            filename=upload.name,
            format=data["format"] or None,
            encoding=data["encoding"] or None,
            mapping=data["mapping"],
            department=data["department"],
            status=data["status"],
        )
        if batch.status == ImportBatch.Status.FAILED:
            raise InvalidInput(batch.error, details={"batch_id": batch.pk})
        batch = import_batch_dispatch(batch=batch)
        if batch.status == ImportBatch.Status.FAILED:
            raise InvalidInput(batch.error, details={"batch_id": batch.pk})
        code = status.HTTP_201_CREATED if batch.status == ImportBatch.Status.SUCCEEDED else status.HTTP_202_ACCEPTED
        return Response(ImportBatchDetailSerializer(batch).data, status=code)


class ImportDetailView(GenericAPIView):
    """One import with its counts and row report."""

    permission_classes = [HasRole]
    required_roles = (CURATOR,)
    serializer_class = ImportBatchDetailSerializer

    def get(self, request, pk: int):
        batch = access_import_batch(user=request.user, pk=pk)
        return Response(ImportBatchDetailSerializer(batch).data)


urlpatterns = [
    path("imports/", ImportListCreateView.as_view(), name="api-import-list"),
    path("imports/<int:pk>/", ImportDetailView.as_view(), name="api-import-detail"),
]
