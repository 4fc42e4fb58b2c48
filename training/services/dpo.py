"""DPO fine-tunes: a ``FineTuneJob`` of stage "dpo" on the shared job lifecycle.

Same kind ("finetune", gpu cluster), queue, live page, cancel, retry/resume, merge and adapter
download as SFT jobs: only what the worker runs differs (``python -m training.engine dpo`` on
the preference version's train split, held out on its validation split; see
``training.workers.finetune`` and docs/preferences.md).
"""

from __future__ import annotations

from django.utils.translation import gettext as _

from curation.models import DatasetVersion
from curation.models_pref import PreferenceItem, PreferenceVersion
from curation.services.preferences import evaluation_test_prompt_keys
from medportal.errors import InvalidInput
from training.models import BaseModel, FineTuneJob
from training.services import require_admin
from training.services.jobs import check_trainable_base, finetune_config_build, finetune_job_insert, worker_death_policy

Status = FineTuneJob.Status


def dpo_settings_clean(*, beta=0.1, label_smoothing=0.0) -> dict:
    from training.engine.config import ConfigError
    from training.engine.dpo import DPOConfig

    try:
        beta, label_smoothing = float(beta), float(label_smoothing)
    except (TypeError, ValueError):
        raise InvalidInput(_("β and label smoothing must be numbers."), details={"beta": _("a number above 0")}) from None
    try:
        DPOConfig(beta=beta, label_smoothing=label_smoothing)
    except ConfigError as exc:
        raise InvalidInput(str(exc), details=exc.errors) from None
    return {"beta": beta, "label_smoothing": label_smoothing}


def preference_training_leaks(version: PreferenceVersion) -> list[int]:
    """Ids of the version's train / validation pairs whose prompt is now in an evaluation test
    split (a dataset version or another preference version frozen after this one)."""
    tested = evaluation_test_prompt_keys(exclude_version=version)
    rows = PreferenceItem.objects.filter(version=version).exclude(split="test").values_list("pair_id", "prompt_key")
    return sorted(pk for pk, key in rows if key in tested)


def dpo_job_create(
    *,
    actor,
    preference_version: PreferenceVersion,
    base_model: BaseModel | None = None,
    parent_job: FineTuneJob | None = None,
    dataset_version: DatasetVersion | None = None,
    preset: str = "",
    overrides: dict | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    on_worker_death: str | None = None,
    evaluate_after: bool = False,
    enqueue: bool = True,
) -> FineTuneJob:
    """Queue a DPO fine-tune on ``preference_version`` (admins only).

    From ``base_model`` with a fresh LoRA adapter, or on top of ``parent_job`` — a succeeded
    fine-tune whose adapter is trained further and is the reference (its base model is used).
    ``dataset_version`` is the data the adapter is evaluated on (default: the parent's).
    Refused while a train or validation pair's question is in an evaluation test split."""
    require_admin(actor, _("Only admins can start fine-tune jobs."))
    if parent_job is not None:
        if parent_job.status != Status.SUCCEEDED or not parent_job.adapter_path:
            message = _("Job #%(pk)s has no adapter to start from: only a succeeded fine-tune can be the starting point.") % {"pk": parent_job.pk}
            raise InvalidInput(message, details={"parent_job": message})
        if base_model is not None and base_model.pk != parent_job.base_model_id:
            message = _("Job #%(pk)s was trained on %(name)s; a DPO job on top of it uses the same base model.") % {
                "pk": parent_job.pk,
                "name": parent_job.base_model.name,
            }
            raise InvalidInput(message, details={"base_model": message})
        base_model = parent_job.base_model
        dataset_version = dataset_version or parent_job.dataset_version
    if base_model is None:
        raise InvalidInput(_("Choose a base model or a succeeded job to start from."), details={"base_model": _("Required.")})
    if dataset_version is None:
        message = _("Choose the dataset version to evaluate the adapter on.")
        raise InvalidInput(message, details={"dataset_version": message})
    if int((preference_version.counts or {}).get("train", 0)) < 1:
        message = _("Preference version '%(name)s' has no training split.") % {"name": preference_version.name}
        raise InvalidInput(message, details={"preference_version": message})
    leaks = preference_training_leaks(preference_version)
    if leaks:
        message = _(
            "%(n)s training pairs of preference version '%(name)s' ask a question that is now in an evaluation "
            "test split (%(ids)s); freeze a new preference version, which keeps them out of training."
        ) % {"n": len(leaks), "name": preference_version.name, "ids": ", ".join(f"#{pk}" for pk in leaks[:20])}
        raise InvalidInput(message, details={"leaked_pairs": leaks})
    config = finetune_config_build(preset=preset, overrides=overrides)
    if config.packing:
        config = finetune_config_build(preset=preset, overrides={**(overrides or {}), "packing": False})
    check_trainable_base(base_model, config)
    dpo = dpo_settings_clean(beta=beta, label_smoothing=label_smoothing)
    policy = worker_death_policy(on_worker_death)

    config = config.to_dict()
    return finetune_job_insert(
        actor=actor,
        summary=f"DPO {base_model.name}" + (f" + #{parent_job.pk}" if parent_job else "") + f" on {preference_version.name}",
        changes={
            "stage": "dpo",
            "preference_version": preference_version.pk,
            "parent_job": parent_job.pk if parent_job else None,
            "dataset_version": dataset_version.pk,
            "config": config,
            "dpo": dpo,
        },
        enqueue=enqueue,
        stage=FineTuneJob.Stage.DPO,
        preference_version=preference_version,
        parent_job=parent_job,
        dataset_version=dataset_version,
        base_model=base_model,
        preset=(preset or "").strip(),
        config=config,
        dpo_config=dpo,
        on_worker_death=policy,
        evaluate_after=bool(evaluate_after),
    )
