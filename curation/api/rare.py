"""REST API for the rare-disease knowledge and the case generator.

* ``GET /api/v1/rare/diseases/?q=&source=`` — search (every role)
* ``GET /api/v1/rare/diseases/{id}/`` — a disease with its annotations and the HPO version
* ``POST /api/v1/rare/cases/`` — generate cases (curators, admins): small requests answer 201
  with the created pair ids, larger ones 202 with a job to poll
* ``GET /api/v1/rare/jobs/{id}/`` — a generation job's progress (its curator, admins)
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.models import Disease, DiseasePhenotype, GenerationJob
from curation.selectors_rare import (
    access_disease,
    access_generation_job,
    disease_search,
    frequency_class,
    hpo_release_current,
)
from curation.services.rare import LANGS, TASKS, rare_cases_start
from medportal.roles import ADMIN, CLINICIAN, CURATOR, HasRole


class DiseaseSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="code", read_only=True)
    annotation_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Disease
        fields = ["id", "source", "name", "name_zh", "links", "ccrd_ids", "annotation_count"]
        read_only_fields = fields


class AnnotationSerializer(serializers.ModelSerializer):
    hpo_id = serializers.CharField(source="phenotype.hpo_id", read_only=True)
    name = serializers.CharField(source="phenotype.name", read_only=True)
    name_zh = serializers.CharField(source="phenotype.name_zh", read_only=True)
    frequency_class = serializers.SerializerMethodField()

    class Meta:
        model = DiseasePhenotype
        fields = [
            "hpo_id",
            "name",
            "name_zh",
            "aspect",
            "negated",
            "frequency_raw",
            "frequency_class",
            "probability",
            "probability_low",
            "probability_high",
            "onset",
            "sex",
            "evidence",
            "reference",
            "original_hpo_id",
        ]
        read_only_fields = fields

    def get_frequency_class(self, obj) -> str:
        return frequency_class(obj) if obj.aspect in ("P", "H", "") else ""


class DiseaseDetailSerializer(DiseaseSerializer):
    annotations = serializers.SerializerMethodField()
    hpo_version = serializers.SerializerMethodField()

    class Meta(DiseaseSerializer.Meta):
        fields = [f for f in DiseaseSerializer.Meta.fields if f != "annotation_count"] + ["annotations", "hpo_version"]
        read_only_fields = fields

    def get_annotations(self, obj) -> list[dict]:
        rows = DiseasePhenotype.objects.filter(disease=obj).select_related("phenotype").order_by("id")
        return AnnotationSerializer(rows, many=True).data

    def get_hpo_version(self, obj) -> str:
        release = hpo_release_current()
        return release.version if release else ""


class GenerateSerializer(serializers.Serializer):
    disease_ids = serializers.ListField(child=serializers.CharField(), min_length=1)
    count = serializers.IntegerField(default=1)
    lang = serializers.ChoiceField(choices=LANGS, default="zh")
    task = serializers.ChoiceField(choices=TASKS, default="diagnosis")
    seed = serializers.IntegerField(default=0)
    rewrite = serializers.BooleanField(default=False, help_text="Paraphrase each vignette with the configured inference model (MEDPORTAL_REWRITE_MODEL).")


class GenerationJobSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=GenerationJob.Status.choices, read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)

    class Meta:
        model = GenerationJob
        fields = [
            "id",
            "status",
            "status_label",
            "progress",
            "params",
            "total",
            "done",
            "created_count",
            "duplicate_count",
            "qa_pair_ids",
            "errors",
            "error",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class DiseaseList(generics.ListAPIView):
    serializer_class = DiseaseSerializer
    permission_classes = [HasRole]
    required_roles = (CURATOR, CLINICIAN, ADMIN)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Disease.objects.none()
        params = self.request.query_params
        source = params.get("source", "")
        return disease_search(user=self.request.user, q=params.get("q", ""), source=source if source in Disease.Source.values else "")


class DiseaseDetail(APIView):
    permission_classes = [HasRole]
    required_roles = (CURATOR, CLINICIAN, ADMIN)

    @extend_schema(responses=DiseaseDetailSerializer)
    def get(self, request, code: str):
        return Response(DiseaseDetailSerializer(access_disease(user=request.user, code=code)).data)


class CaseGenerate(APIView):
    permission_classes = [HasRole]
    required_roles = (CURATOR,)

    @extend_schema(request=GenerateSerializer, responses={202: GenerationJobSerializer})
    def post(self, request):
        data = GenerateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = rare_cases_start(user=request.user, **data.validated_data)
        return Response(GenerationJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class JobDetail(APIView):
    permission_classes = [HasRole]
    required_roles = (CURATOR,)

    @extend_schema(responses=GenerationJobSerializer)
    def get(self, request, pk: int):
        return Response(GenerationJobSerializer(access_generation_job(user=request.user, pk=pk)).data)


urlpatterns = [
    path("rare/diseases/", DiseaseList.as_view(), name="api-rare-disease-list"),
    path("rare/diseases/<str:code>/", DiseaseDetail.as_view(), name="api-rare-disease-detail"),
    path("rare/cases/", CaseGenerate.as_view(), name="api-rare-cases"),
    path("rare/jobs/<int:pk>/", JobDetail.as_view(), name="api-rare-job"),
]
