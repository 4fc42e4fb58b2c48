"""Serializers of the QA-pair, review and comment API. They shape and parse; the services
decide what is allowed (and raise the application errors the API renders)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from curation.models import Comment, QAPair, Review
from curation.services.core import CONTENT_FIELDS, LABEL_FIELDS


class ReviewSerializer(serializers.ModelSerializer):
    reviewer = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Review
        fields = ["id", "reviewer", "decision", "comment", "round", "created_at"]
        read_only_fields = fields


class CommentSerializer(serializers.ModelSerializer):
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Comment
        fields = ["id", "author", "body", "created_at"]
        read_only_fields = ["id", "author", "created_at"]


class IdentifierSerializer(serializers.Serializer):
    field = serializers.CharField()
    kind = serializers.CharField()
    start = serializers.IntegerField()
    end = serializers.IntegerField()
    text = serializers.CharField()


class QAPairSerializer(serializers.ModelSerializer):
    """A pair as the list and the write endpoints return it."""

    department = serializers.SerializerMethodField()
    tags = serializers.SerializerMethodField()
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)
    identifiers = IdentifierSerializer(many=True, read_only=True)
    history = serializers.ListField(child=serializers.ListField(child=serializers.CharField()), read_only=True)
    disease_codes = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = QAPair
        fields = [
            "id",
            *CONTENT_FIELDS,
            *LABEL_FIELDS,
            "status",
            "version",
            "review_round",
            "submitted_at",
            "decided_at",
            "author",
            "source",
            "source_ref",
            "import_batch",
            "source_row",
            "synthetic",
            "has_identifiers",
            "identifiers",
            "near_duplicate_of",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_blank=True))
    def get_department(self, obj: QAPair) -> str:
        return obj.department.name if obj.department_id else ""

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_tags(self, obj: QAPair) -> list[str]:
        return sorted(t.name for t in obj.tags.all())


class QAPairDetailSerializer(QAPairSerializer):
    """One pair with its reviews (all rounds, newest round first)."""

    reviews = ReviewSerializer(many=True, read_only=True, source="review_list")

    class Meta(QAPairSerializer.Meta):
        fields = [*QAPairSerializer.Meta.fields, "reviews"]
        read_only_fields = fields


class _PairContentFields(serializers.Serializer):
    instruction = serializers.CharField(trim_whitespace=False)
    output = serializers.CharField(trim_whitespace=False)
    input = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    system = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    reasoning = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    history = serializers.ListField(
        child=serializers.ListField(
            child=serializers.CharField(allow_blank=True, trim_whitespace=False), min_length=2, max_length=2
        ),
        required=False,
        help_text="Earlier turns: [[question, answer], ...]",
    )
    department = serializers.CharField(
        required=False, allow_blank=True, max_length=100, help_text="Department name (created if new)."
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, help_text="Tag names (created if new)."
    )
    disease_codes = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text='"ICD10:E11.9", "ORPHA:558", "OMIM:154700", "HPO:HP:0001166" or free text.',
    )
    difficulty = serializers.ChoiceField(choices=[("", "—"), *QAPair.Difficulty.choices], required=False, allow_blank=True)


class QAPairCreateSerializer(_PairContentFields):
    """Input of POST /pairs/: a new draft."""


class QAPairUpdateSerializer(_PairContentFields):
    """Input of PATCH /pairs/{id}/: any content/label fields plus the version you loaded."""

    version = serializers.IntegerField(min_value=1, help_text="The pair's version when you loaded it (409 if it changed since).")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, f in self.fields.items():
            if name != "version":
                f.required = False

    # Every content field is already optional, and ``version`` is required even for PATCH:
    # refuse DRF's / drf-spectacular's partial mode so the schema documents that too.
    @property
    def partial(self) -> bool:
        return False

    @partial.setter
    def partial(self, value) -> None:
        pass


class VersionSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, help_text="The pair's version when you loaded it (409 if it changed since).")


class ReviewDecisionSerializer(VersionSerializer):
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    comment = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Required to reject or request changes."
    )
    confirm_identifiers = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Required (true) to approve a pair flagged with unmasked personal identifiers: you have seen "
        "them (the pair still cannot be frozen until they are masked).",
    )


class ReopenSerializer(VersionSerializer):
    reason = serializers.CharField(max_length=500)


class CommentCreateSerializer(serializers.Serializer):
    body = serializers.CharField()


class SubmitResultSerializer(QAPairSerializer):
    """The submitted pair, plus ``warnings`` (e.g. it holds unmasked personal identifiers)."""

    warnings = serializers.SerializerMethodField()

    class Meta(QAPairSerializer.Meta):
        fields = [*QAPairSerializer.Meta.fields, "warnings"]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_warnings(self, obj: QAPair) -> list[str]:
        return list(getattr(obj, "warnings", ()))


class ReviewResultSerializer(serializers.Serializer):
    review = ReviewSerializer()
    pair = QAPairSerializer()
