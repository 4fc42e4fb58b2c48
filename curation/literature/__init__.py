"""Literature: Django-free parsing of PubMed XML, MEDLINE text, PubMedQA JSON and plain
text / Markdown into documents, sentence splitting, the drafting prompt and the grounding
check. ``curation.services.literature`` stores what these produce; docs/literature.md.
"""
