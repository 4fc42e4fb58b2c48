"""REST API for dataset versions: /api/v1/versions/ (list, retrieve, create = freeze) and
/api/v1/versions/{id}/export/?format=llamafactory|sharegpt|hf|xlsx (a .zip download).

Every role reads and downloads; only curators and admins freeze. Versions are immutable: no
update or delete route exists.
"""

from __future__ import annotations

from django.http import FileResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from curation.exports import EXPORTERS
from curation.models import DatasetVersion
from curation.selectors_versions import access_version, version_list
from curation.services.versions import (
    DEFAULT_SPLIT,
    dataset_version_export_zip,
    dataset_version_freeze,
)
from medportal.errors import InvalidInput
from medportal.roles import ADMIN, CLINICIAN, CURATOR, HasRole


class DatasetVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    total = serializers.IntegerField(read_only=True)
    synthetic_share = serializers.SerializerMethodField()

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "name",
            "description",
            "created_at",
            "created_by",
            "filters",
            "split_ratios",
            "seed",
            "content_hash",
            "counts",
            "total",
            "synthetic_count",
            "synthetic_share",
        ]
        read_only_fields = fields

    def get_synthetic_share(self, obj: DatasetVersion) -> float:
        return round(obj.synthetic_count / obj.total, 4) if obj.total else 0.0


class FreezeSerializer(serializers.Serializer):
    """Input of a freeze; the service validates the values and names."""

    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    departments = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    tags = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    synthetic = serializers.BooleanField(required=False, allow_null=True, default=None)
    sources = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    split = serializers.ListField(child=serializers.FloatField(), required=False, default=lambda: list(DEFAULT_SPLIT))
    seed = serializers.IntegerField(required=False, default=42)
    mask_identifiers = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Mask the personal identifiers of the selected pairs first (audited per pair). Without it a "
        "selection holding identifiers is refused (400, details.identifier_pairs lists them).",
    )


class _IgnoreFormatParam(DefaultContentNegotiation):
    """``?format=`` names the export format here, not a DRF renderer: errors stay JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        renderer = next((r for r in renderers if isinstance(r, JSONRenderer)), renderers[0])
        return renderer, renderer.media_type


class DatasetVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = DatasetVersionSerializer
    permission_classes = [HasRole]
    required_roles = (CURATOR, CLINICIAN, ADMIN)
    write_roles = (CURATOR,)

    def get_queryset(self):
        return version_list()

    def get_object(self):
        return access_version(self.request.user, self.kwargs["pk"])

    def get_content_negotiator(self):
        if getattr(self, "action", None) == "export":
            return _IgnoreFormatParam()
        return super().get_content_negotiator()

    @extend_schema(request=FreezeSerializer, responses={201: DatasetVersionSerializer})
    def create(self, request):
        data = FreezeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        version = dataset_version_freeze(
            user=request.user,
            name=v["name"],
            description=v["description"],
            departments=v["departments"],
            tags=v["tags"],
            filters={"synthetic": v["synthetic"], "sources": v["sources"]},
            split=v["split"],
            seed=v["seed"],
            mask_identifiers=v["mask_identifiers"],
        )
        return Response(DatasetVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=list(EXPORTERS), required=True, description="Export format.")],
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The export as a .zip")},
    )
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        version = self.get_object()
        fmt = request.query_params.get("format", "")
        if fmt not in EXPORTERS:
            raise InvalidInput(
                f"Unknown export format '{fmt}'; use ?format= one of {', '.join(EXPORTERS)}.",
                details={"format": list(EXPORTERS)},
            )
        archive, filename = dataset_version_export_zip(version=version, format=fmt, user=request.user)
        return FileResponse(archive, as_attachment=True, filename=filename, content_type="application/zip")


urlpatterns = [
    path("versions/", DatasetVersionViewSet.as_view({"get": "list", "post": "create"}), name="api-version-list"),
    path("versions/<int:pk>/", DatasetVersionViewSet.as_view({"get": "retrieve"}), name="api-version-detail"),
    path("versions/<int:pk>/export/", DatasetVersionViewSet.as_view({"get": "export"}), name="api-version-export"),
]
