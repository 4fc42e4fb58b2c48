"""Literature figures: documents imported per second, candidates drafted per second with the
demo model, and the grounding check's precision and recall on the hand-labelled set.

1. **Import**: a PubMed XML of 1,000 ``PubmedArticle`` elements, built here from the shared
   PubMedQA contexts (``../shared/datasets/pubmedqa_pqal/ori_pqal.json``: PMID, the question as
   title, one ``AbstractText`` per labelled context plus the long answer as CONCLUSIONS, MeSH
   headings, year), imported into a fresh database by the real service
   (``documents_import``: defusedxml parse, sections, sentence split, dedupe, search document,
   one transaction). Timed: the import only.
2. **Drafting**: ``--docs`` of those documents drafted by the worker (``draft_run_work``) with
   the demo model (built with its default pre-training into ``--model-dir`` unless one is
   there), ``--per-doc`` candidates each (two generations per candidate), in process on CPU.
   Timed: the run from claim to succeed.
3. **Grounding check**: precision and recall of "flagged" for "unsupported" on
   ``tests/curation/literature_data/grounding_labelled.jsonl`` (120 hand-labelled candidates).

    .venv/bin/python bench/literature.py [--docs 5] [--per-doc 2] [--max-new-tokens 96] [--skip-drafting]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _setup import SHARED, machine  # noqa: E402

LABELLED = ROOT / "tests" / "curation" / "literature_data" / "grounding_labelled.jsonl"


def pubmed_xml_from_pubmedqa(path: Path, limit: int = 1000) -> bytes:
    data = json.loads(path.read_text(encoding="utf-8"))
    parts = ['<?xml version="1.0" ?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
             '"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n<PubmedArticleSet>\n']
    for pmid, item in list(data.items())[:limit]:
        texts = "".join(
            f'<AbstractText Label="{escape(label, {chr(34): "&quot;"})}" NlmCategory="{escape(label.split()[0], {chr(34): "&quot;"})}">{escape(text)}</AbstractText>'
            for label, text in zip(item.get("LABELS", []), item["CONTEXTS"])
        )
        texts += f'<AbstractText Label="CONCLUSIONS" NlmCategory="CONCLUSIONS">{escape(item.get("LONG_ANSWER", ""))}</AbstractText>'
        mesh = "".join(f'<MeshHeading><DescriptorName MajorTopicYN="N">{escape(m)}</DescriptorName></MeshHeading>' for m in item.get("MESHES", []))
        parts.append(
            f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">{pmid}</PMID>'
            f'<Article PubModel="Print"><Journal><JournalIssue CitedMedium="Print"><PubDate><Year>{escape(str(item.get("YEAR", "")))}</Year></PubDate></JournalIssue>'
            f"<Title>PubMedQA (PQA-L)</Title></Journal><ArticleTitle>{escape(item['QUESTION'])}</ArticleTitle>"
            f"<Abstract>{texts}</Abstract><Language>eng</Language></Article><MeshHeadingList>{mesh}</MeshHeadingList></MedlineCitation>"
            f'<PubmedData><ArticleIdList><ArticleId IdType="pubmed">{pmid}</ArticleId></ArticleIdList></PubmedData></PubmedArticle>\n'
        )
    parts.append("</PubmedArticleSet>\n")
    return "".join(parts).encode("utf-8")


def grounding_figures() -> dict:
    from curation.literature import grounding

    cases = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    tp = fp = fn = tn = 0
    for case in cases:
        flagged = not grounding.check(case["answer"], case["support"]).ok
        bad = case["label"] == "unsupported"
        tp += flagged and bad
        fp += flagged and not bad
        fn += bad and not flagged
        tn += not bad and not flagged
    return {
        "labelled": len(cases),
        "unsupported": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": round(tp / (tp + fp), 3) if tp + fp else None,
        "recall": round(tp / (tp + fn), 3) if tp + fn else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5, help="documents to draft from (default 5)")
    parser.add_argument("--per-doc", type=int, default=2, help="candidates per document (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/medportal-bench-demo"))
    parser.add_argument("--skip-drafting", action="store_true")
    args = parser.parse_args()

    source = SHARED / "pubmedqa_pqal" / "ori_pqal.json"
    if not source.is_file():
        print(json.dumps({"bench": "literature", "error": f"{source} not found"}))
        return 1
    xml = pubmed_xml_from_pubmedqa(source)

    tmp = tempfile.TemporaryDirectory(prefix="medportal-bench-")
    os.environ["MEDPORTAL_DATA_DIR"] = tmp.name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings")
    os.environ.setdefault("DEBUG", "1")
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from curation.models import Document
    from curation.services.literature import documents_import

    call_command("migrate", verbosity=0, interactive=False)
    user, _ = get_user_model().objects.get_or_create(username="bench-admin", defaults={"is_superuser": True, "is_staff": True})

    start = time.perf_counter()
    batch = documents_import(user=user, name="pubmedqa_1000.xml", data=xml)
    seconds = time.perf_counter() - start
    result = {
        "bench": "literature",
        "import": {
            "articles": batch.rows_total,
            "bytes": len(xml),
            "created": batch.created_count,
            "skipped": batch.skipped_count,
            "seconds": round(seconds, 3),
            "documents_per_s": round(batch.created_count / seconds, 1) if seconds else None,
            "sentences": sum(len(s) for s in Document.objects.values_list("sentences", flat=True)),
            "error": batch.error,
        },
        "grounding": grounding_figures(),
        "db": connection.vendor,
        "machine": machine(),
    }

    if not args.skip_drafting:
        result["drafting"] = drafting_figures(args, user)
    print(json.dumps(result, ensure_ascii=False))
    connection.close()
    tmp.cleanup()
    return 0


def drafting_figures(args, user) -> dict:
    from unittest import mock

    from django.conf import settings

    from curation.models import Document, QAPair
    from curation.services.literature_drafting import draft_run_start
    from curation.workers.literature import draft_run_work
    from training.models import BaseModel

    if not (args.model_dir / "config.json").is_file():
        from training.engine.demo_model import build_demo_model, demo_corpus

        build_demo_model(args.model_dir, demo_corpus())
    settings.MEDPORTAL_INFERENCE_URL = ""
    base = BaseModel.objects.create(name="demo-bench", path=str(args.model_dir), registered_by=user, has_chat_template=True)
    docs = list(Document.objects.order_by("pk").values_list("pk", flat=True)[: args.docs])
    with mock.patch("django_q.tasks.async_task", lambda *a, **k: "bench"):
        run = draft_run_start(user=user, document_ids=docs, model_key=str(base.pk), per_document=args.per_doc, lang="en", max_new_tokens=args.max_new_tokens)
    # Load the model once outside the timing (a worker keeps it cached between runs).
    from training.draft_provider import resolve

    _label, generate = resolve(str(base.pk), actor=user)
    generate([{"role": "user", "content": "warm up"}], max_new_tokens=4, temperature=0.0, top_p=1.0, repetition_penalty=1.0, seed=0)
    start = time.perf_counter()
    run = draft_run_work(run_id=run.pk)
    seconds = time.perf_counter() - start
    pairs = QAPair.objects.filter(pk__in=run.qa_pair_ids)
    return {
        "documents": len(docs),
        "per_document": args.per_doc,
        "max_new_tokens": args.max_new_tokens,
        "status": run.status,
        "drafted": run.done,
        "created": run.created_count,
        "flagged": run.flagged_count,
        "cited_by_model": sum(p.synthetic_meta["support_by"] == "model" for p in pairs),
        "errors": len(run.errors),
        "seconds": round(seconds, 2),
        "candidates_per_s": round(run.done / seconds, 3) if seconds else None,
        "error": run.error,
    }


if __name__ == "__main__":
    sys.exit(main())
