"""Pagination that stays fast on large tables.

``COUNT(*)`` over a filtered 200,000-row table is the slowest query of a list page (tens of
milliseconds on PostgreSQL, more with the review queue's anti-join), and nobody pages past
the 200th page: they refine the filter. So counts are exact up to ``COUNT_CAP`` and stop
there; pages and the API say "10,000+" instead of a number.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.utils.functional import cached_property
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

COUNT_CAP = 10_000


class CappedPaginator(Paginator):
    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        return min(self._bounded_count, self.cap)

    @cached_property
    def _bounded_count(self) -> int:
        qs = self.object_list
        if hasattr(qs, "order_by"):
            # COUNT over at most cap + 1 rows; ordering is irrelevant to a count.
            return qs.order_by()[: self.cap + 1].count()
        return len(qs)

    @property
    def capped(self) -> bool:
        """True when there are more objects than ``count`` says."""
        return self._bounded_count > self.cap


class CappedPageNumberPagination(PageNumberPagination):
    """DRF page-number pagination with ``CappedPaginator``; ``count_capped`` tells when
    ``count`` stopped at the cap."""

    django_paginator_class = CappedPaginator

    def get_paginated_response(self, data):
        paginator = self.page.paginator
        return Response(
            {
                "count": paginator.count,
                "count_capped": paginator.capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        response = super().get_paginated_response_schema(schema)
        response["properties"]["count_capped"] = {
            "type": "boolean",
            "description": f"True when there are more than {COUNT_CAP} results and count stopped there.",
        }
        response["required"] = [*response.get("required", []), "count_capped"]
        return response
