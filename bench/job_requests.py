"""How long the request takes that starts rare-case generation, and how long its worker runs.

Rare-case generation used to run inside the request for up to 20 cases; it is now always a
background job (``medportal.jobs``, kind "rare_cases"): the request only checks and queues it.
This bench imports the full HPO release and the CCRD list (../shared/datasets) into a throwaway
SQLite database, signs in a curator, and times through the full Django stack (test client):

* ``request_s``: ``POST /curation/rare/generate/`` asking for N cases (the redirect answer), in a
  warm process (one GET of the page first: loading the URL conf alone takes seconds);
* ``worker_s``: the worker body (``curation.workers.rare.rare_cases_run``) on the queued job,
  in this process (the first run of a process builds the knowledge base, ≈7 s, cached after).

Run from a checkout of before the change (56deefd) it times what the page did then: the cases
were generated inside the request (``status_after_request`` is then already "done").

    .venv/bin/python bench/job_requests.py [--cases 5] [--repeat 3]

Prints one JSON line per measurement and a summary line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import SHARED, django_setup, emit, machine  # noqa: E402

HPO = SHARED / "hpo_rare_disease"
CCRD = SHARED / "china_rare_disease_list_ccrd"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5, help="cases per request (one disease, N cases)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not (HPO / "hp.obo").is_file():
        emit({"skipped": f"needs {HPO}"})
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="medportal-jobreq-"))
    os.environ["MEDPORTAL_DATA_DIR"] = str(tmp / "data")
    os.environ.setdefault("DEBUG", "1")  # the test client on a throwaway database
    django_setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    from curation.models import GenerationJob
    from curation.services.rare import hpo_import

    try:
        from curation.workers.rare import rare_cases_run
    except ImportError:  # a checkout from before the change: the worker body lived in the service
        from curation.services.rare import rare_cases_run

    setup_test_environment()
    call_command("migrate", verbosity=0)
    t0 = time.perf_counter()
    hpo_import(
        obo=HPO / "hp.obo",
        hpoa=HPO / "phenotype.hpoa.gz",
        zh=HPO / "hp-zh.babelon.tsv",
        orpha_names_zh=CCRD / "cns_orphanet.json",
        ccrd=CCRD / "conpendium_hpo.json",
        ccrd_map=CCRD / "ccrd_to_orpha.json",
    )
    emit({"setup": "hpo_import", "seconds": round(time.perf_counter() - t0, 2)})
    user = get_user_model().objects.create_user("bench-curator", password="pw-bench-1")
    user.groups.add(Group.objects.get_or_create(name="curator")[0])
    client = Client()
    client.force_login(user)
    t0 = time.perf_counter()
    assert client.get("/curation/rare/generate/").status_code == 200  # a warm process: URL conf, views, templates loaded
    emit({"setup": "first GET of the page (loads the URL conf)", "seconds": round(time.perf_counter() - t0, 2)})
    requests, workers = [], []
    for i in range(args.repeat):
        body = {"diseases": "ORPHA:558", "count": args.cases, "lang": "zh", "task": "diagnosis", "seed": i}
        t0 = time.perf_counter()
        response = client.post("/curation/rare/generate/", body)
        request_s = time.perf_counter() - t0
        assert response.status_code == 302, response.status_code
        job = GenerationJob.objects.order_by("-pk").first()
        queued_as = job.status
        t0 = time.perf_counter()
        job = rare_cases_run(job_id=job.pk)  # a no-op when the request generated the cases itself
        worker_s = time.perf_counter() - t0 if queued_as == "queued" else 0.0
        assert job.status in ("succeeded", "done") and job.created_count + job.duplicate_count == args.cases, (job.status, job.error)
        requests.append(request_s)
        workers.append(worker_s)
        emit({"run": i, "request_s": round(request_s, 3), "status_after_request": queued_as, "worker_s": round(worker_s, 3)})
    emit(
        {
            "bench": "job_requests",
            "cases": args.cases,
            "request_s_median": round(statistics.median(requests), 3),
            "request_s_max": round(max(requests), 3),
            "worker_s_first": round(workers[0], 3),
            "worker_s_median_after_first": round(statistics.median(workers[1:]), 3) if len(workers) > 1 else None,
            "machine": machine(),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
