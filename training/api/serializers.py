"""Serializers of the training API. They shape and parse; the services decide what is allowed
and validate the recipe (raising the application errors the API renders)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from training.models import AdapterMerge, BaseModel, FineTuneJob


class BaseModelSerializer(serializers.ModelSerializer):
    registered_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    source_job = serializers.PrimaryKeyRelatedField(read_only=True, help_text="The fine-tune job whose adapter a merged model contains.")
    info = serializers.JSONField(read_only=True, help_text="Everything the folder inspection read (hidden size, layers, heads, files …).")

    class Meta:
        model = BaseModel
        fields = [
            "id",
            "name",
            "path",
            "description",
            "architecture",
            "model_type",
            "num_parameters",
            "dtype",
            "has_chat_template",
            "vocab_size",
            "context_length",
            "info",
            "source_job",
            "is_active",
            "registered_by",
            "created_at",
        ]
        read_only_fields = fields


class BaseModelRegisterSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="A slug: letters, digits, hyphens, underscores.")
    path = serializers.CharField(max_length=500, help_text="Absolute path of a local Hugging Face model folder on the server.")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class FineTuneJobSerializer(serializers.ModelSerializer):
    """A row of the job list."""

    status = serializers.ChoiceField(choices=FineTuneJob.Status.choices, read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    dataset_version_name = serializers.CharField(source="dataset_version.name", read_only=True)
    base_model_name = serializers.CharField(source="base_model.name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = FineTuneJob
        fields = [
            "id",
            "status",
            "status_label",
            "dataset_version",
            "dataset_version_name",
            "base_model",
            "base_model_name",
            "preset",
            "on_worker_death",
            "progress",
            "step",
            "total_steps",
            "train_loss_first",
            "train_loss_last",
            "eval_loss",
            "tokens_per_second",
            "attempt",
            "worker",
            "error",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class TemplateCheckSerializer(serializers.Serializer):
    name = serializers.CharField()
    training_fingerprint = serializers.CharField(allow_null=True, help_text="SHA-256 of the probe conversation as rendered in training.")
    serving_fingerprint = serializers.CharField(
        allow_null=True, help_text="The same, as chat and evaluation will render it (null without an adapter)."
    )
    match = serializers.BooleanField(allow_null=True, help_text="null until both fingerprints are known.")


@extend_schema_field({"type": "array", "items": {"type": "array", "items": {"type": "number", "nullable": True}}})
class PointsField(serializers.ListField):
    """[[step, value, …], …]"""


class AdapterMergeSerializer(serializers.ModelSerializer):
    """A queued merge (a background job): status, progress and error under the names every job uses."""

    status = serializers.ChoiceField(choices=AdapterMerge.Status.choices, read_only=True)
    status_label = serializers.CharField(source="get_status_display", read_only=True)

    class Meta:
        model = AdapterMerge
        fields = ["id", "job", "name", "path", "status", "status_label", "progress", "error", "base_model", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class FineTuneJobDetailSerializer(serializers.Serializer):
    """``training.selectors.job_snapshot`` plus the recipe and the inputs of the job."""

    merges = AdapterMergeSerializer(many=True, read_only=True, help_text="The merges of the job's adapter, newest first.")

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=FineTuneJob.Status.choices)
    status_label = serializers.CharField()
    progress = serializers.FloatField(help_text="0..1")
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    epoch = serializers.FloatField()
    eta_seconds = serializers.FloatField(allow_null=True)
    tokens_per_second = serializers.FloatField(allow_null=True)
    learning_rate = serializers.FloatField(allow_null=True)
    train_loss_first = serializers.FloatField(allow_null=True)
    train_loss_last = serializers.FloatField(allow_null=True)
    eval_loss = serializers.FloatField(allow_null=True)
    num_train_examples = serializers.IntegerField()
    num_eval_examples = serializers.IntegerField()
    log_tail = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)
    adapter_path = serializers.CharField(allow_blank=True)
    worker = serializers.CharField(allow_blank=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    attempt = serializers.IntegerField(help_text="How many times a worker has started this job.")
    version = serializers.IntegerField(help_text="Bumped on every change of the row.")
    cancel_requested = serializers.BooleanField()
    train = PointsField(help_text="[[step, loss, learning_rate, tokens_per_second], …]")
    eval = PointsField(help_text="[[step, eval_loss], …]")
    can_cancel = serializers.BooleanField()
    can_retry = serializers.BooleanField()
    template = TemplateCheckSerializer()
    dataset_version = serializers.IntegerField()
    dataset_version_name = serializers.CharField()
    base_model = serializers.IntegerField()
    base_model_name = serializers.CharField()
    preset = serializers.CharField(allow_blank=True)
    config = serializers.DictField(help_text="Every knob of training.engine.config.FinetuneConfig.")
    on_worker_death = serializers.ChoiceField(choices=FineTuneJob.OnWorkerDeath.choices)
    evaluate_after = serializers.BooleanField()
    output_dir = serializers.CharField(allow_blank=True)
    last_checkpoint = serializers.CharField(allow_blank=True)
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()


def job_detail_data(job: FineTuneJob, snapshot: dict) -> dict:
    return {
        **snapshot,
        "dataset_version": job.dataset_version_id,
        "dataset_version_name": job.dataset_version.name,
        "base_model": job.base_model_id,
        "base_model_name": job.base_model.name,
        "preset": job.preset,
        "config": job.config,
        "on_worker_death": job.on_worker_death,
        "evaluate_after": job.evaluate_after,
        "output_dir": job.output_dir,
        "last_checkpoint": job.last_checkpoint,
        "created_by": job.created_by.get_username(),
        "created_at": job.created_at.isoformat(),
        "merges": AdapterMergeSerializer(job.merges.order_by("-created_at", "-id"), many=True).data,
    }


@extend_schema_field({"type": "object", "additionalProperties": True, "example": {"max_steps": 50, "learning_rate": 0.0002}})
class OverridesField(serializers.DictField):
    """Setting → value on top of the preset (the names of FinetuneConfig)."""


class FineTuneJobCreateSerializer(serializers.Serializer):
    dataset_version = serializers.IntegerField(help_text="Id of a frozen dataset version with a train split.")
    base_model = serializers.IntegerField(help_text="Id of an active base model.")
    preset = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="llamafactory, qwen3_medical, cpu_demo, or empty for the engine defaults."
    )
    overrides = OverridesField(required=False, default=dict)
    evaluate_after = serializers.BooleanField(
        default=False, help_text="When the job succeeds, queue evaluations of the base and the tuned model on the held-out split."
    )
    on_worker_death = serializers.ChoiceField(
        choices=FineTuneJob.OnWorkerDeath.choices,
        required=False,
        allow_null=True,
        default=None,
        help_text="Default: MEDPORTAL_ON_WORKER_DEATH.",
    )


class RetrySerializer(serializers.Serializer):
    resume = serializers.BooleanField(required=False, default=True, help_text="Resume from the last checkpoint when there is one.")


class MergeSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="Name of the merged model, registered as a new base model.")


class EstimateSerializer(serializers.Serializer):
    gpu_memory_gb = serializers.FloatField()
    seconds_gpu = serializers.FloatField()
    total_tokens = serializers.IntegerField()
    steps = serializers.IntegerField()
    train_examples = serializers.IntegerField(required=False)
    trainable_parameters = serializers.IntegerField(required=False)
    breakdown_gb = serializers.DictField(child=serializers.FloatField(), required=False)
    assumptions = serializers.DictField(child=serializers.FloatField(), required=False)


class PresetSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    config = serializers.DictField(help_text="Every knob of FinetuneConfig for this preset.")
    requires_gpu = serializers.BooleanField()
    gpu_only = serializers.ListField(child=serializers.CharField(), help_text="The settings that need CUDA.")
    estimate = EstimateSerializer(allow_null=True, help_text="With ?base_model=&dataset_version= only.")
