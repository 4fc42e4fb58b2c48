"""PostgreSQL only: full-text search over the bigram search document (curation/lib/search.py).

A stored generated ``tsvector`` column keeps the analysed document on the row, so the GIN
index's rechecks and the planner's statistics need no re-parsing of ``search_text``. The
column is invisible to Django (no model field): selectors query it with raw SQL, and SQLite,
which matches the same tokens as substrings of ``search_text``, has neither column nor index.
"""

from django.db import migrations

FORWARD = [
    "ALTER TABLE curation_qapair ADD COLUMN IF NOT EXISTS search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, search_text)) STORED",
    "CREATE INDEX IF NOT EXISTS qapair_search_vector_gin ON curation_qapair USING gin (search_vector)",
]
BACKWARD = [
    "DROP INDEX IF EXISTS qapair_search_vector_gin",
    "ALTER TABLE curation_qapair DROP COLUMN IF EXISTS search_vector",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for sql in statements:
                schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("curation", "0001_initial")]
    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
