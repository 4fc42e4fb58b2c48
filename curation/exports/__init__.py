"""Dataset-version exporters, one module per format.

Each exporter is ``export(version, out_dir: Path) -> list[Path]``: it streams the version's
frozen items (``DatasetItem.content``) from the database, writes one file per non-empty split
plus the format's index file, and returns the written paths (sorted). Exporters do no
auditing; callers go through ``curation.services.versions.dataset_version_export``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.utils.translation import gettext_lazy as _

from . import hf, llamafactory, sharegpt, xlsx

Exporter = Callable[..., list[Path]]

EXPORTERS: dict[str, Exporter] = {
    "llamafactory": llamafactory.export,
    "sharegpt": sharegpt.export,
    "hf": hf.export,
    "xlsx": xlsx.export,
}

LABELS: dict[str, object] = {
    "llamafactory": _("LLaMA-Factory (alpaca JSON + dataset_info.json)"),
    "sharegpt": _("ShareGPT (JSON Lines + dataset_info.json)"),
    "hf": _("Hugging Face datasets (Parquet)"),
    "xlsx": _("Excel workbook (XLSX)"),
}

__all__ = ["EXPORTERS", "LABELS", "Exporter"]
