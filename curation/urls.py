"""Curation pages. Each area keeps its own ``urlpatterns`` in curation/views/<area>.py."""

from curation.views import imports, literature, pairs, preferences, rare, versions

app_name = "curation"

urlpatterns = [*pairs.urlpatterns, *imports.urlpatterns, *versions.urlpatterns, *rare.urlpatterns, *literature.urlpatterns, *preferences.urlpatterns]
