"""Rare-disease engine figures: parse time, generation rate, realism vs real cases, diversity.

Prints one JSON object per line. Needs ../shared/datasets (skips with a message otherwise).
Run: .venv/bin/python bench/rare_cases.py [--cases 1000] [--imprecision X --extra-mean Y --drop Z]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.rare import (  # noqa: E402
    CaseGenerator,
    CaseParams,
    KnowledgeBase,
    Ranker,
    parse_ccrd,
    parse_hpoa,
    parse_obo,
)

SHARED = ROOT.parent / "shared" / "datasets"
HPO = SHARED / "hpo_rare_disease"
CCRD = SHARED / "china_rare_disease_list_ccrd"


def emit(**kw):
    print(json.dumps(kw, ensure_ascii=False), flush=True)


def topk(ranks, k):
    return round(sum(1 for r in ranks if r is not None and r <= k) / len(ranks), 3)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--imprecision", type=float, default=None)
    ap.add_argument("--extra-mean", type=float, default=None)
    ap.add_argument("--drop", type=float, default=None)
    ap.add_argument("--skip-textbook", action="store_true")
    args = ap.parse_args(argv)
    if not (HPO / "hp.obo").exists():
        emit(skipped="shared datasets not found", path=str(SHARED))
        return

    from _setup import machine

    emit(figure="machine", machine=machine())
    t = time.perf_counter()
    version, terms = parse_obo(HPO / "hp.obo")
    t_obo = time.perf_counter() - t
    t = time.perf_counter()
    hv, rows = parse_hpoa(HPO / "phenotype.hpoa.gz")
    n_rows = sum(1 for _ in rows)
    t_hpoa = time.perf_counter() - t
    emit(figure="parse", obo_terms=len(terms), obo_s=round(t_obo, 2), hpoa_rows=n_rows, hpoa_gz_s=round(t_hpoa, 2))

    t = time.perf_counter()
    kb = KnowledgeBase.from_files(HPO / "hp.obo", HPO / "phenotype.hpoa.gz", zh=HPO / "hp-zh.babelon.tsv",
                                  orpha_names_zh=CCRD / "cns_orphanet.json")
    t_kb = time.perf_counter() - t
    t = time.perf_counter()
    ranker = Ranker(kb)
    t_rk = time.perf_counter() - t
    gen = CaseGenerator(kb, ranker)
    emit(figure="build", diseases=len(kb.diseases), kb_from_files_s=round(t_kb, 2), ranker_build_s=round(t_rk, 2))

    # CCRD list -> ORPHA (relation E first, else the first mapped id that has annotations)
    ccrd = parse_ccrd(CCRD / "conpendium_hpo.json", CCRD / "ccrd_to_orpha.json")
    ccrd_map = {c.id: [o for o, _ in c.orpha] for c in ccrd}
    targets = []
    for c in ccrd:
        ordered = sorted(c.orpha, key=lambda o: o[1] != "E")
        pick = next((o for o, _ in ordered if o in kb.diseases and kb.diseases[o].phenotypes), None)
        if pick and pick not in targets:
            targets.append(pick)
    emit(figure="ccrd_targets", ccrd_entries=len(ccrd), base_diseases=len({c.base_id for c in ccrd}),
         orpha_targets=len(targets))

    # real cases
    real = json.loads((CCRD / "Public_Test_set.json").read_text(encoding="utf-8"))
    t = time.perf_counter()
    real_ranks, n_terms = [], []
    for hpos, dx in real:
        ids = []
        for d in dx:
            ids += ccrd_map.get(d, []) if d.startswith("CCRD:") else [d]
        score = ranker.scores(hpos)
        real_ranks.append(ranker.best_rank(ids, score))
        n_terms.append(len(hpos))
    t_real = time.perf_counter() - t
    emit(figure="realism_real", cases=len(real), top1=topk(real_ranks, 1), top10=topk(real_ranks, 10),
         mean_terms=round(sum(n_terms) / len(n_terms), 1), rank_ms=round(1000 * t_real / len(real), 2))

    knobs = {k: v for k, v in (("imprecision", args.imprecision), ("extra_mean", args.extra_mean),
                               ("drop", args.drop)) if v is not None}
    configs = [("tuned", knobs)]
    if not args.skip_textbook:
        configs.append(("textbook", {"imprecision": 0.0, "extra_mean": 0.0, "drop": 0.0}))
    per = max(1, args.cases // len(targets))
    for label, kw in configs:
        ranks, sizes = [], []
        t = time.perf_counter()
        n = 0
        for j, did in enumerate(targets):
            k = per + (1 if j < args.cases - per * len(targets) else 0)
            for case in gen.generate(CaseParams(did, lang="zh", seed=1, **kw), k):
                ranks.append(case.true_rank)
                sizes.append(len(case.present))
                n += 1
        dt = time.perf_counter() - t
        emit(figure="realism_generated", config=label, knobs=kw or "defaults", cases=n, top1=topk(ranks, 1),
             top10=topk(ranks, 10), mean_terms=round(sum(sizes) / len(sizes), 1),
             cases_per_s=round(n / dt, 1))

    # diversity: 1,000 cases of one disease
    did = "ORPHA:90794" if "ORPHA:90794" in kb.diseases else targets[0]
    t = time.perf_counter()
    cases = gen.generate(CaseParams(did, seed=7, **knobs), 1000)
    dt = time.perf_counter() - t
    distinct = len({frozenset(c.present) for c in cases})
    emit(figure="diversity", disease=did, cases=len(cases), distinct_present_sets=distinct,
         share=round(distinct / len(cases), 3), cases_per_s=round(len(cases) / dt, 1))


if __name__ == "__main__":
    main()
