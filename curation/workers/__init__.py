"""Bodies of the curation app's background work (one module per kind, run by ``curation.tasks``).

Each claims its row through ``medportal.jobs`` and records its end there; the services keep the
domain logic (parsing, de-duplicating, generating cases)."""
