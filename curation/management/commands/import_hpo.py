"""manage.py import_hpo: load an HPO release and the Chinese rare-disease resources.

    python manage.py import_hpo --obo hp.obo --hpoa phenotype.hpoa.gz \
        [--zh hp-zh.babelon.tsv] [--orpha-names-zh cns_orphanet.json] \
        [--ccrd conpendium_hpo.json --ccrd-map ccrd_to_orpha.json] [--as-user U] [--json]

All or nothing; running it again with the same files changes nothing. Progress goes to
stderr; ``--json`` prints the counts as one JSON object on the last line.
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, no_translations

from curation.services.rare import hpo_import
from medportal.errors import ApplicationError


class Command(BaseCommand):
    help = "Import the HPO ontology, phenotype.hpoa annotations, Chinese labels and the CCRD list."

    def add_arguments(self, parser):
        parser.add_argument("--obo", required=True, help="hp.obo")
        parser.add_argument("--hpoa", required=True, help="phenotype.hpoa (gzipped or not)")
        parser.add_argument("--zh", help="hp-zh.babelon.tsv: official Chinese HPO labels")
        parser.add_argument("--orpha-names-zh", dest="orpha_names_zh", help="cns_orphanet.json: Chinese Orphanet disease names")
        parser.add_argument("--omim-names-zh", dest="omim_names_zh", help="CNSOMIM.json: Chinese OMIM disease names")
        parser.add_argument("--ccrd", help="conpendium_hpo.json: China's first national rare disease list")
        parser.add_argument("--ccrd-map", dest="ccrd_map", help="ccrd_to_orpha.json: CCRD → ORPHA mapping")
        parser.add_argument("--as-user", dest="as_user", help="Record this user as the importer (default: nobody).")
        parser.add_argument("--json", action="store_true", help="Print the counts as one JSON object on the last line.")

    @no_translations
    def handle(self, *args, **opts):
        user = None
        if opts["as_user"]:
            User = get_user_model()
            try:
                user = User.objects.get(**{User.USERNAME_FIELD: opts["as_user"]})
            except User.DoesNotExist:
                raise CommandError(f"Unknown user '{opts['as_user']}'.") from None

        def progress(message: str) -> None:
            self.stderr.write(message)

        try:
            result = hpo_import(
                obo=opts["obo"],
                hpoa=opts["hpoa"],
                zh=opts["zh"],
                orpha_names_zh=opts["orpha_names_zh"],
                omim_names_zh=opts["omim_names_zh"],
                ccrd=opts["ccrd"],
                ccrd_map=opts["ccrd_map"],
                user=user,
                progress=progress,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        report = result.as_dict()
        if opts["json"]:
            self.stdout.write(json.dumps(report, ensure_ascii=False))
            return
        self.stdout.write(
            f"HPO {result.version}: {result.phenotypes} terms ({result.obsolete} obsolete), {result.diseases} diseases, "
            f"{result.annotations} annotations, {result.zh_labels} Chinese labels, {result.ccrd} CCRD diseases "
            f"({result.ccrd_keys} entries); {result.remapped} obsolete ids remapped, {result.unresolved} unresolved; "
            f"{result.seconds} s"
        )
        for entry in result.remapped_ids[:50]:
            self.stdout.write(f"  {entry['where']}: {entry['from']} → {entry['to']} ({entry['count']}×)")
        if len(result.remapped_ids) > 50:
            self.stdout.write(f"  … {len(result.remapped_ids) - 50} more")
