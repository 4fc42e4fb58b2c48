"""Django-free rare-disease engine: HPO parsers, knowledge base, phenotype ranker, case generator.

Nothing in this package imports Django; the curation app builds a :class:`KnowledgeBase` from
its models (or tests/bench build one straight from the release files) and calls in.
"""
from .generator import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    ONSET_AGE_YEARS,
    Case,
    CaseGenerator,
    CaseParams,
    difficulty_for_rank,
)
from .knowledge import (
    FREQUENCY_TERMS,
    UNKNOWN_FREQUENCY,
    Annotation,
    Disease,
    KnowledgeBase,
    Ontology,
    diseases_from_rows,
    frequency_to_probability,
)
from .parsers import (
    CcrdDisease,
    HpoaRow,
    Term,
    parse_ccrd,
    parse_hpoa,
    parse_obo,
    parse_omim_names_zh,
    parse_orpha_names_zh,
    parse_zh_labels,
)
from .ranker import Ranker

__all__ = [
    "Annotation",
    "Case",
    "CaseGenerator",
    "CaseParams",
    "CcrdDisease",
    "Disease",
    "FREQUENCY_TERMS",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "HpoaRow",
    "KnowledgeBase",
    "ONSET_AGE_YEARS",
    "Ontology",
    "Ranker",
    "Term",
    "UNKNOWN_FREQUENCY",
    "difficulty_for_rank",
    "diseases_from_rows",
    "frequency_to_probability",
    "parse_ccrd",
    "parse_hpoa",
    "parse_obo",
    "parse_omim_names_zh",
    "parse_orpha_names_zh",
    "parse_zh_labels",
]
