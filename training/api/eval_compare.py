"""Comparisons of several contenders in the REST API (/api/v1/evaluations/compare/).

``POST evaluations/compare/`` (admins) queues one run per contender in one comparison group with
the chosen suites and judge; ``GET evaluations/compare/<group>/`` (every role) returns the
comparison: per metric each contender's mean with its bootstrap 95% interval, paired tests
against the first contender, per department / subject, speed, worst and best answers
(``training.selectors_eval.evaluation_comparison``; docs/evaluation-suites.md).
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from curation.selectors_versions import access_version
from medportal.errors import InvalidInput
from training.api.evaluations import ParamsField, _EvaluationView, _lookup
from training.models import EvalRun
from training.selectors import base_model_get, job_get
from training.selectors_eval import evaluation_comparison, evaluation_data, evaluation_get
from training.services.eval_suites import JUDGE_LANGS, SUITES, evaluation_compare_create


class ContenderSerializer(serializers.Serializer):
    base_model = serializers.IntegerField(help_text="Id of a registered base model (a hosted one included).")
    job = serializers.IntegerField(required=False, allow_null=True, default=None, help_text="A succeeded fine-tune of it (its adapter).")


class CompareCreateSerializer(serializers.Serializer):
    dataset_version = serializers.IntegerField(help_text="Id of a frozen dataset version.")
    contenders = ContenderSerializer(many=True, help_text="The models compared, the first one being the baseline of the paired tests.")
    suites = serializers.ListField(child=serializers.ChoiceField(choices=SUITES), default=["reference"])
    judge_model = serializers.IntegerField(required=False, allow_null=True, default=None, help_text="The rubric suite's judge (a base model id).")
    judge_lang = serializers.ChoiceField(choices=JUDGE_LANGS, default="zh")
    split = serializers.ChoiceField(choices=EvalRun.Split.choices, default="test")
    mode = serializers.ChoiceField(choices=EvalRun.Mode.choices, default="llamafactory")
    preset = serializers.CharField(required=False, allow_blank=True, default="")
    params = ParamsField(required=False, default=dict)
    max_samples = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)


class EvaluationCompareCreateView(_EvaluationView):
    @extend_schema(
        request=CompareCreateSerializer,
        responses={201: dict},
        description="Queue one evaluation run per contender, in one comparison group, scoring the chosen suites.",
    )
    def post(self, request):
        form = CompareCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        version = _lookup(lambda pk: access_version(None, pk), data["dataset_version"], "dataset_version", "dataset version")
        contenders = []
        for entry in data["contenders"]:
            model = _lookup(base_model_get, entry["base_model"], "contenders", "base model")
            job = _lookup(job_get, entry["job"], "contenders", "fine-tune job") if entry["job"] is not None else None
            contenders.append((model, job))
        judge = _lookup(base_model_get, data["judge_model"], "judge_model", "base model") if data["judge_model"] is not None else None
        runs = evaluation_compare_create(
            actor=request.user,
            dataset_version=version,
            contenders=contenders,
            suites=data["suites"],
            judge_model=judge,
            judge_lang=data["judge_lang"],
            split=data["split"],
            mode=data["mode"],
            preset=data["preset"],
            params=data["params"],
            max_samples=data["max_samples"],
        )
        body = {"group": runs[0].group, "runs": [evaluation_data(evaluation_get(pk=r.pk)) for r in runs]}
        return Response(body, status=status.HTTP_201_CREATED)


class EvaluationCompareView(_EvaluationView):
    @extend_schema(responses={200: dict}, description="The comparison of a group's contenders (see docs/evaluation-suites.md).")
    def get(self, request, group: str):
        if len(group) > 64:
            raise InvalidInput("The comparison group is longer than 64 characters.", details={"group": "at most 64 characters"})
        return Response(evaluation_comparison(group))


urlpatterns = [
    path("evaluations/compare/", EvaluationCompareCreateView.as_view(), name="api-evaluation-compare-create"),
    path("evaluations/compare/<str:group>/", EvaluationCompareView.as_view(), name="api-evaluation-compare"),
]
