"""``{% literature_evidence pair %}``: on a pair's page, the abstract a drafted candidate rests on
(supporting sentences marked) and the grounding check's result; nothing for other pairs."""

from __future__ import annotations

from django import template

from curation.selectors_literature import candidate_evidence

register = template.Library()


@register.inclusion_tag("curation/literature/_evidence.html")
def literature_evidence(pair):
    return {"evidence": candidate_evidence(pair)}
