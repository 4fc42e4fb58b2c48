"""manage.py generate_rare_cases: synthetic rare-disease cases as QA pairs in review.

    python manage.py generate_rare_cases --disease ORPHA:558 [--disease CCRD:1] [--count 5]
        [--lang zh|en] [--task diagnosis|next_test|differential] [--seed 0] [--rewrite] [--as-user U] [--json]

Runs synchronously. ``--json`` prints ``{"created": n, "qa_pair_ids": [...], ...}`` as the last line.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, no_translations

from curation.management.common import command_user
from curation.services.rare import LANGS, TASKS, rare_cases_generate
from medportal.errors import ApplicationError


class Command(BaseCommand):
    help = "Generate synthetic rare-disease cases (QA pairs that start in review)."

    def add_arguments(self, parser):
        parser.add_argument("--disease", action="append", required=True, help="Disease id (ORPHA:558, OMIM:154700, CCRD:1); repeatable.")
        parser.add_argument("--count", type=int, default=1, help="Cases per disease (default 1).")
        parser.add_argument("--lang", choices=LANGS, default="zh")
        parser.add_argument("--task", choices=TASKS, default="diagnosis")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--rewrite", action="store_true", help="Paraphrase each vignette with the configured model (MEDPORTAL_REWRITE_MODEL)."
        )
        parser.add_argument("--as-user", dest="as_user", help="Author of the pairs (default: the first superuser).")
        parser.add_argument("--json", action="store_true", help="Print the result as one JSON object on the last line.")

    @no_translations
    def handle(self, *args, **opts):
        user = command_user(opts["as_user"], action="generate")
        ids = [p.strip() for d in opts["disease"] for p in d.split(",") if p.strip()]
        try:
            result = rare_cases_generate(
                user=user, disease_ids=ids, count=opts["count"], lang=opts["lang"], task=opts["task"], seed=opts["seed"],
                rewrite=opts["rewrite"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if opts["json"]:
            self.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False))
            return
        self.stdout.write(
            f"{result.created} cases created (in review), {result.duplicates} duplicates skipped, {len(result.errors)} errors"
        )
        for error in result.errors:
            self.stderr.write(f"  {error['disease_id']}: {error['message']}")
