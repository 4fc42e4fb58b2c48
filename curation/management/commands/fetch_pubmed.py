"""manage.py fetch_pubmed: search PubMed through E-utilities and import the abstracts found.

    python manage.py fetch_pubmed --query "aspirin AND stroke[mh]" --email you@hospital.org
        [--max 100] [--as-user U] [--json]

For deployments that reach NCBI. ``NCBI_API_KEY`` (environment) raises the rate limit from 3
to 10 requests a second; ``NCBI_EUTILS_URL`` points at another E-utilities server (a mirror,
or the tests' recorded one). Documents already stored (same PMID / DOI) are reported as
duplicates; the import's row report is on /curation/literature/imports/<id>/.
"""

from __future__ import annotations

import json
import os

from django.core.management.base import BaseCommand, CommandError, no_translations

from curation.management.common import command_user, literature_import_result
from curation.literature.eutils import DEFAULT_BASE_URL, MAX_RESULTS
from curation.services.literature import documents_fetch_pubmed
from medportal.errors import ApplicationError


class Command(BaseCommand):
    help = "Search PubMed (E-utilities esearch + efetch) and import the abstracts as documents."

    def add_arguments(self, parser):
        parser.add_argument("--query", required=True, help="A PubMed query, as typed in PubMed's search box.")
        parser.add_argument("--email", required=True, help="Your contact email: NCBI asks every E-utilities user for one.")
        parser.add_argument("--max", type=int, default=100, help=f"Most PMIDs to fetch (default 100, at most {MAX_RESULTS}).")
        parser.add_argument("--as-user", dest="as_user", help="Curator the import is recorded for (default: the first superuser).")
        parser.add_argument("--json", action="store_true", help="Print the result as one JSON object on the last line.")

    @no_translations
    def handle(self, *args, **opts):
        if not 1 <= opts["max"] <= MAX_RESULTS:
            raise CommandError(f"--max must be between 1 and {MAX_RESULTS}.")
        user = command_user(opts["as_user"])
        try:
            batch = documents_fetch_pubmed(
                user=user,
                query=opts["query"],
                email=opts["email"],
                max_results=opts["max"],
                api_key=os.environ.get("NCBI_API_KEY", ""),
                base_url=os.environ.get("NCBI_EUTILS_URL", "") or DEFAULT_BASE_URL,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        result = literature_import_result(batch, found=batch.rows_total)
        if opts["json"]:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(
            f"Import #{batch.pk}: {batch.rows_total} articles fetched, {batch.created_count} documents created, "
            f"{batch.duplicate_count} duplicates, {batch.skipped_count + batch.error_count} not imported"
        )
