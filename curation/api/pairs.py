"""REST API for QA pairs and their review (/api/v1/).

* ``GET /pairs/`` (every role) — same filters and search as the list page, paginated
  (``page``, ``page_size`` up to 200); ``POST /pairs/`` (curator/admin) creates a draft.
* ``GET /pairs/{id}/`` (every role); ``PATCH /pairs/{id}/`` (curator/admin) with ``version``.
* ``POST /pairs/{id}/submit/`` · ``/review/`` · ``/mask-identifiers/`` · ``/reopen/`` ·
  ``GET|POST /pairs/{id}/comments/`` · ``GET /review-queue/``.

Writes carry the ``version`` the client loaded; a stale one is answered 409 with the common
error body ``{"error": {"code": "conflict", "message": ..., "details": ...}}``.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import selectors
from curation.api.serializers import (
    CommentCreateSerializer,
    CommentSerializer,
    QAPairCreateSerializer,
    QAPairDetailSerializer,
    QAPairSerializer,
    QAPairUpdateSerializer,
    ReopenSerializer,
    ReviewDecisionSerializer,
    ReviewResultSerializer,
    SubmitResultSerializer,
    VersionSerializer,
)
from curation.models import QAPair
from curation.services import editing, review
from medportal.pagination import CappedPageNumberPagination
from medportal.roles import ADMIN, ALL_ROLES, CLINICIAN, CURATOR, HasRole

ERROR = OpenApiResponse(description='Error body: {"error": {"code", "message", "details"}}')


class PairPagination(CappedPageNumberPagination):
    page_size = selectors.DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = max(selectors.PAGE_SIZES)


LIST_PARAMETERS = [
    OpenApiParameter("q", OpenApiTypes.STR, description="Full-text search; works for Chinese (bigrams) and English."),
    OpenApiParameter("status", OpenApiTypes.STR, enum=QAPair.Status.values),
    OpenApiParameter("department", OpenApiTypes.INT, description="Department id."),
    OpenApiParameter("tag", OpenApiTypes.INT, description="Tag id."),
    OpenApiParameter("source", OpenApiTypes.STR, description="Exact source name."),
    OpenApiParameter("synthetic", OpenApiTypes.BOOL),
    OpenApiParameter("has_identifiers", OpenApiTypes.BOOL, description="Pairs flagged for personal identifiers."),
    OpenApiParameter("author", OpenApiTypes.INT, description="Author user id."),
    OpenApiParameter("reviewer", OpenApiTypes.INT, description="Pairs this user (id) has reviewed."),
    OpenApiParameter(
        "sort", OpenApiTypes.STR, enum=["id", "-id", "updated", "-updated", "submitted", "-submitted", "status", "-status", "relevance"]
    ),
]


def _pair_response(pair: QAPair, *, code=status.HTTP_200_OK, detail: bool = False) -> Response:
    if detail:
        pair.review_list = selectors.qa_pair_reviews(pair)
        return Response(QAPairDetailSerializer(pair).data, status=code)
    return Response(QAPairSerializer(pair).data, status=code)


def _fresh(request, pk) -> QAPair:
    return selectors.access_pair(request.user, pk)


class PairListCreate(generics.GenericAPIView):
    permission_classes = [HasRole]
    required_roles = ALL_ROLES
    write_roles = (CURATOR,)
    pagination_class = PairPagination
    serializer_class = QAPairSerializer
    filter_backends: list = []

    def get_queryset(self):
        return selectors.qa_pair_list(user=self.request.user, filters=self.request.query_params)

    @extend_schema(parameters=LIST_PARAMETERS, responses={200: QAPairSerializer(many=True), 400: ERROR}, summary="List QA pairs")
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(QAPairSerializer(page, many=True).data)

    @extend_schema(
        request=QAPairCreateSerializer, responses={201: QAPairSerializer, 400: ERROR, 403: ERROR}, summary="Create a draft pair"
    )
    def post(self, request):
        s = QAPairCreateSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        pair = editing.qa_pair_create(author=request.user, **s.validated_data)
        return _pair_response(_fresh(request, pair.pk), code=status.HTTP_201_CREATED)


class PairDetail(APIView):
    permission_classes = [HasRole]
    required_roles = ALL_ROLES
    write_roles = (CURATOR,)

    @extend_schema(responses={200: QAPairDetailSerializer, 404: ERROR}, summary="Retrieve a pair with its reviews")
    def get(self, request, pk: int):
        return _pair_response(_fresh(request, pk), detail=True)

    @extend_schema(
        request=QAPairUpdateSerializer,
        responses={200: QAPairSerializer, 400: ERROR, 403: ERROR, 404: ERROR, 409: ERROR},
        summary="Edit content and labels (draft or changes_requested; the latter goes back to review)",
    )
    def patch(self, request, pk: int):
        pair = _fresh(request, pk)
        s = QAPairUpdateSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        data = dict(s.validated_data)
        version = data.pop("version")
        editing.qa_pair_update(pair=pair, editor=request.user, version=version, **data)
        return _pair_response(_fresh(request, pk))


class PairSubmit(APIView):
    permission_classes = [HasRole]
    required_roles = ALL_ROLES  # curators, admins, and the pair's author (checked by the service)

    @extend_schema(
        request=VersionSerializer,
        responses={200: SubmitResultSerializer, 403: ERROR, 404: ERROR, 409: ERROR},
        summary="Submit a draft / changes_requested pair for review (warns when it holds identifiers)",
    )
    def post(self, request, pk: int):
        pair = _fresh(request, pk)
        s = VersionSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        review.qa_pair_submit(pair=pair, actor=request.user, version=s.validated_data["version"])
        fresh = _fresh(request, pk)
        warning = review.identifier_warning(fresh)
        fresh.warnings = [warning] if warning else []
        return Response(SubmitResultSerializer(fresh).data)


class PairReview(APIView):
    permission_classes = [HasRole]
    required_roles = (CLINICIAN,)

    @extend_schema(
        request=ReviewDecisionSerializer,
        responses={201: ReviewResultSerializer, 400: ERROR, 403: ERROR, 404: ERROR, 409: ERROR},
        summary="Approve, reject or request changes (clinician/admin, not the author)",
    )
    def post(self, request, pk: int):
        pair = _fresh(request, pk)
        s = ReviewDecisionSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        done = review.qa_pair_review(pair=pair, reviewer=request.user, **s.validated_data)
        data = ReviewResultSerializer({"review": done, "pair": _fresh(request, pk)}).data
        return Response(data, status=status.HTTP_201_CREATED)


class PairMask(APIView):
    permission_classes = [HasRole]
    required_roles = (CURATOR,)

    @extend_schema(
        request=VersionSerializer,
        responses={200: QAPairSerializer, 400: ERROR, 403: ERROR, 404: ERROR, 409: ERROR},
        summary="Replace every personal identifier with its placeholder",
    )
    def post(self, request, pk: int):
        pair = _fresh(request, pk)
        s = VersionSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        editing.qa_pair_mask_identifiers(pair=pair, editor=request.user, version=s.validated_data["version"])
        return _pair_response(_fresh(request, pk))


class PairReopen(APIView):
    permission_classes = [HasRole]
    required_roles = (ADMIN,)

    @extend_schema(
        request=ReopenSerializer,
        responses={200: QAPairSerializer, 400: ERROR, 403: ERROR, 404: ERROR, 409: ERROR},
        summary="Send an approved or rejected pair back to draft (admin)",
    )
    def post(self, request, pk: int):
        pair = _fresh(request, pk)
        s = ReopenSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        review.qa_pair_reopen(pair=pair, actor=request.user, **s.validated_data)
        return _pair_response(_fresh(request, pk))


class PairComments(APIView):
    permission_classes = [HasRole]
    required_roles = ALL_ROLES

    @extend_schema(responses={200: CommentSerializer(many=True), 404: ERROR}, summary="The pair's discussion thread")
    def get(self, request, pk: int):
        pair = _fresh(request, pk)
        return Response(CommentSerializer(selectors.qa_pair_comments(pair), many=True).data)

    @extend_schema(
        request=CommentCreateSerializer, responses={201: CommentSerializer, 400: ERROR, 404: ERROR}, summary="Add a comment"
    )
    def post(self, request, pk: int):
        pair = _fresh(request, pk)
        s = CommentCreateSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        comment = review.comment_create(pair=pair, author=request.user, body=s.validated_data["body"])
        return Response(CommentSerializer(comment).data, status=status.HTTP_201_CREATED)


class ReviewQueue(generics.GenericAPIView):
    permission_classes = [HasRole]
    required_roles = (CLINICIAN,)
    pagination_class = PairPagination
    serializer_class = QAPairSerializer
    filter_backends: list = []

    def get_queryset(self):
        show_all = self.request.query_params.get("all_departments", "").lower() in ("1", "true", "yes")
        return selectors.review_queue(user=self.request.user, all_departments=show_all)

    @extend_schema(
        parameters=[OpenApiParameter("all_departments", OpenApiTypes.BOOL, description="Ignore your department assignment.")],
        responses={200: QAPairSerializer(many=True)},
        summary="Pairs waiting for my review, oldest submission first",
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(QAPairSerializer(page, many=True).data)


urlpatterns = [
    path("pairs/", PairListCreate.as_view(), name="api-pair-list"),
    path("pairs/<int:pk>/", PairDetail.as_view(), name="api-pair-detail"),
    path("pairs/<int:pk>/submit/", PairSubmit.as_view(), name="api-pair-submit"),
    path("pairs/<int:pk>/review/", PairReview.as_view(), name="api-pair-review"),
    path("pairs/<int:pk>/mask-identifiers/", PairMask.as_view(), name="api-pair-mask"),
    path("pairs/<int:pk>/reopen/", PairReopen.as_view(), name="api-pair-reopen"),
    path("pairs/<int:pk>/comments/", PairComments.as_view(), name="api-pair-comments"),
    path("review-queue/", ReviewQueue.as_view(), name="api-review-queue"),
]
