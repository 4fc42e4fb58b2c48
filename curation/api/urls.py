"""Curation REST API (/api/v1/). Each area registers its routes in curation/api/<area>.py."""

from curation.api import imports, pairs, rare, versions

urlpatterns = [*pairs.urlpatterns, *imports.urlpatterns, *versions.urlpatterns, *rare.urlpatterns]
