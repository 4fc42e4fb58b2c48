"""Django-free scoring of evaluation suites (docs/evaluation-suites.md has the exact rules).

* ``options``   — which option (A, B, C, …) a free-text answer to a multiple-choice question chose;
* ``diagnosis`` — whether an answer names a disease, by its names and synonyms (zh / en);
* ``stats``     — agreement (Spearman ρ, quadratic-weighted κ), bootstrap intervals, paired tests;
* ``judge``     — the versioned rubric-judge prompt and the parser of a judge's output.

Each module takes plain data (strings, lists, dicts) and imports no Django.
"""
