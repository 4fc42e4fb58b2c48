"""Local ``evaluate`` metric modules: ``evaluate.load(MEDPORTAL_BLEU_ROUGE)`` works offline (no hub)."""

from pathlib import Path

MEDPORTAL_BLEU_ROUGE = str(Path(__file__).resolve().parent / "medportal_bleu_rouge")
