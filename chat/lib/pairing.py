"""Which two contenders meet in the next arena battle. Django-free.

The user picks neither: ``draw_pair`` draws an unordered pair of two *different* contenders,
each pair with weight 1 / (1 + votes it already has), so pairs with fewer counted votes come
up more often (a pair with no votes is drawn 11 times as often as one with 10) while every pair
keeps a chance (the draw stays unpredictable, which keeps the arena blind). The two sides are
then put in random order: which one is "A" says nothing.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable, Mapping, Sequence


def pair_key(x: Hashable, y: Hashable) -> frozenset:
    """The key of an unordered pair in ``pair_votes``."""
    return frozenset((x, y))


def pair_weight(votes: int) -> float:
    return 1.0 / (1.0 + max(0, votes))


def draw_pair(contenders: Sequence[Hashable], pair_votes: Mapping[frozenset, int], *, rng: random.Random | None = None) -> tuple:
    """Two different contenders, in random order. ValueError with fewer than two."""
    unique = list(dict.fromkeys(contenders))
    if len(unique) < 2:
        raise ValueError("at least two different contenders are needed")
    rng = rng or random.SystemRandom()
    pairs = list(itertools.combinations(unique, 2))
    weights = [pair_weight(pair_votes.get(pair_key(x, y), 0)) for x, y in pairs]
    pair = list(rng.choices(pairs, weights=weights, k=1)[0])
    rng.shuffle(pair)
    return pair[0], pair[1]
