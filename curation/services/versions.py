"""Dataset versions: freeze approved pairs into an immutable, content-hashed, split snapshot.

``dataset_version_freeze`` is the only way a ``DatasetVersion`` is written; nothing updates
one afterwards. ``dataset_version_export`` / ``dataset_version_export_zip`` write a version
in one of the formats of ``curation.exports.EXPORTERS`` and record the export.

How a freeze splits (docs/datasets.md says the same for users):

1. Select: approved pairs only, narrowed by departments / tags (any of the names given),
   synthetic yes/no and source. Each pair's content and labels are frozen with
   ``pair_content`` and hashed (``item_digest``: SHA-256 of its canonical JSON).
2. Group leak-prone pairs (union-find): pairs with the same content hash or the same frozen
   digest; pairs linked by ``near_duplicate_of`` chains (also through pairs that are not
   selected); pairs whose SimHash fingerprints are within ``fingerprint`` 's near-duplicate
   distance. A group always goes whole into one split.
3. Stratify by department: a group belongs to the department most of its members have
   (ties: the smaller name). Within a department the groups are sorted by their smallest
   digest, then shuffled with ``random.Random(f"{seed}:{department}")``.
4. Allocate per department by the largest-remainder rule over the department's pair count
   (ties go to train, then validation, then test); a split with ratio 0 gets nothing. The
   shuffled groups are dealt one by one to the split with the largest unfilled quota, so a
   department of one pair goes to train and groups larger than one may overshoot a quota.
5. No question of an evaluation test split enters training: a group holding a question that
   an evaluated test split asks (the test split of a dataset version an evaluation run used, or
   of a preference version) goes to test (the audit record lists them, ``held_out``).
6. Inside each split, items are ordered by digest (``position``).

The version hash (``version_hash``) is SHA-256 over the sorted lines "<digest> <split>" of
every item, preceded by a format tag: the same frozen content with the same split gives the
same hash whatever the name, description, pair ids, ratios or seed that produced it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, pgettext

from curation.lib import fingerprint
from curation.models import DatasetItem, DatasetVersion, Department, QAPair, Tag
from curation.selectors_versions import SPLITS, approved_pairs
from curation.services.core import pair_content
from medportal.audit import audit_record
from medportal.errors import InvalidInput, NotAllowed
from medportal.roles import CLINICIAN, CURATOR, has_role

HASH_FORMAT = "medportal-dataset-version/1"
DEFAULT_SPLIT: tuple[float, float, float] = (0.8, 0.1, 0.1)
RATIO_TOLERANCE = 1e-6
_SEED_MIN, _SEED_MAX = -(2**31), 2**31 - 1
_FILTER_KEYS = {"synthetic", "source", "sources"}
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}
_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------- input cleaning


@dataclass(frozen=True, slots=True)
class VersionFilters:
    """The selection of a freeze, as stored on ``DatasetVersion.filters``."""

    departments: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    synthetic: bool | None = None
    sources: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "departments": list(self.departments),
            "tags": list(self.tags),
            "synthetic": self.synthetic,
            "sources": list(self.sources),
        }

    def queryset(self):
        return approved_pairs(
            departments=self.departments, tags=self.tags, synthetic=self.synthetic, sources=self.sources
        )


def _names(values: Iterable) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values or ():
        name = getattr(v, "name", v)
        name = str(name).strip() if name is not None else ""
        if name:
            out.append(name)
    return tuple(sorted(dict.fromkeys(out)))


def parse_synthetic(value) -> bool | None:
    """None / "" / "any" → both kinds; yes/true/1 → synthetic only; no/false/0 → real only."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "any", "all", "both"):
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInput(_("The synthetic filter must be yes, no or empty, not “%(value)s”.") % {"value": value})


def version_filters_clean(*, departments=(), tags=(), filters: dict | None = None) -> VersionFilters:
    """Validated filters; unknown departments or tags are an error, not an empty selection."""
    filters = dict(filters or {})
    unknown = sorted(set(filters) - _FILTER_KEYS)
    if unknown:
        raise InvalidInput(
            _("Unknown filter %(names)s; the filters are synthetic and source.") % {"names": ", ".join(unknown)}
        )
    dept_names = _names(departments)
    tag_names = _names(tags)
    missing = sorted(
        set(dept_names) - set(Department.objects.filter(name__in=dept_names).values_list("name", flat=True))
    )
    if missing:
        raise InvalidInput(
            _("Unknown department: %(names)s.") % {"names": ", ".join(missing)}, details={"departments": missing}
        )
    missing = sorted(set(tag_names) - set(Tag.objects.filter(name__in=tag_names).values_list("name", flat=True)))
    if missing:
        raise InvalidInput(_("Unknown tag: %(names)s.") % {"names": ", ".join(missing)}, details={"tags": missing})
    sources = _names([*_names(filters.get("source") or ()), *_names(filters.get("sources") or ())])
    return VersionFilters(
        departments=dept_names, tags=tag_names, synthetic=parse_synthetic(filters.get("synthetic")), sources=sources
    )


def split_ratios_clean(split) -> tuple[float, float, float]:
    """Three non-negative numbers (train, validation, test) adding up to 1, train above 0.

    Accepts a sequence of numbers or a string such as "0.8,0.1,0.1".
    """
    example = _("Give three split ratios (train, validation, test) adding up to 1, e.g. 0.8,0.1,0.1.")
    if isinstance(split, str):
        parts = [p.strip() for p in split.replace("/", ",").split(",")]
    else:
        try:
            parts = list(split)
        except TypeError:
            raise InvalidInput(example) from None
    if len(parts) != 3:
        raise InvalidInput(example)
    ratios = []
    for part in parts:
        if isinstance(part, bool):
            raise InvalidInput(example)
        try:
            value = float(part)
        except (TypeError, ValueError):
            raise InvalidInput(
                _("“%(value)s” is not a number. %(example)s") % {"value": part, "example": example}
            ) from None
        if not math.isfinite(value):
            raise InvalidInput(example)
        ratios.append(value)
    if any(r < 0 for r in ratios):
        raise InvalidInput(_("Split ratios cannot be negative."))
    total = sum(ratios)
    if abs(total - 1.0) > RATIO_TOLERANCE:
        raise InvalidInput(_("The split ratios add up to %(total)s; they must add up to 1.") % {"total": f"{total:g}"})
    if ratios[0] <= 0:
        raise InvalidInput(_("The train ratio must be above 0."))
    return ratios[0], ratios[1], ratios[2]


def _seed_clean(seed) -> int:
    if isinstance(seed, bool):
        raise InvalidInput(_("The seed must be a whole number."))
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise InvalidInput(_("The seed must be a whole number.")) from None
    if isinstance(seed, float) and seed != value:
        raise InvalidInput(_("The seed must be a whole number."))
    if not _SEED_MIN <= value <= _SEED_MAX:
        raise InvalidInput(_("The seed must be between %(lo)s and %(hi)s.") % {"lo": _SEED_MIN, "hi": _SEED_MAX})
    return value


def _name_clean(name) -> str:
    name = re.sub(r"\s+", " ", str(name or "")).strip()
    if not name:
        raise InvalidInput(_("Give the dataset version a name."))
    max_length = DatasetVersion._meta.get_field("name").max_length
    if len(name) > max_length:
        raise InvalidInput(_("The name is longer than %(n)s characters.") % {"n": max_length})
    if DatasetVersion.objects.filter(name=name).exists():
        raise InvalidInput(
            _("A dataset version named “%(name)s” already exists; versions are permanent, so pick another name.")
            % {"name": name}
        )
    return name


# --------------------------------------------------------------------------- splitting


def item_digest(content: dict) -> str:
    """SHA-256 of a frozen item's canonical JSON (sorted keys, UTF-8, no spaces)."""
    text = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def version_hash(assignments: Iterable[tuple[str, str]]) -> str:
    """SHA-256 over ``HASH_FORMAT`` and the sorted "<digest> <split>" lines."""
    h = hashlib.sha256(HASH_FORMAT.encode("ascii") + b"\n")
    for digest, split in sorted(assignments):
        h.update(f"{digest} {split}\n".encode("ascii"))
    return h.hexdigest()


@dataclass(slots=True)
class Member:
    """One selected pair as the splitter sees it."""

    pk: int
    digest: str
    stratum: str
    content_hash: str = ""
    simhash: int | None = None
    synthetic: bool = False
    content: dict = field(default_factory=dict, repr=False)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x):
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != parent[root]:
            root = parent[root]
        while x != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _near_duplicate_distance() -> int:
    return int(fingerprint.DEFAULT_MAX_DISTANCE)


def simhash_links(members: Sequence[Member], max_distance: int | None = None) -> list[tuple[int, int]]:
    """Every pair of members whose fingerprints differ in at most ``max_distance`` bits.

    Exact, by the pigeonhole rule: cut the 64 bits into ``max_distance + 1`` bands; two
    fingerprints that close agree on at least one whole band, so only pairs sharing a band
    value are compared with ``fingerprint.hamming``.
    """
    k = _near_duplicate_distance() if max_distance is None else max_distance
    prints = [(m.pk, m.simhash & _MASK64) for m in members if m.simhash is not None]
    if len(prints) < 2:
        return []
    bands = k + 1
    width = -(-64 // bands)
    links: set[tuple[int, int]] = set()
    for b in range(bands):
        shift = b * width
        if shift >= 64:
            break
        mask = (1 << min(width, 64 - shift)) - 1
        buckets: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for pk, fp in prints:
            buckets[(fp >> shift) & mask].append((pk, fp))
        for bucket in buckets.values():
            for i in range(len(bucket)):
                pk_a, fp_a = bucket[i]
                for pk_b, fp_b in bucket[i + 1 :]:
                    pair = (min(pk_a, pk_b), max(pk_a, pk_b))
                    if pair not in links and fingerprint.hamming(fp_a, fp_b) <= k:
                        links.add(pair)
    return sorted(links)


def cluster_members(
    members: Sequence[Member], *, near_duplicate_edges: Iterable[tuple[int, int]] = (), max_distance: int | None = None
) -> list[list[Member]]:
    """Groups of members that must share a split (see the module docstring, step 2).

    ``near_duplicate_edges`` are (pk, near_duplicate_of pk) links that may pass through pks
    outside ``members``.
    """
    uf = _UnionFind()
    for m in members:
        uf.find(m.pk)
    for a, b in near_duplicate_edges:
        uf.union(a, b)
    for key in ("content_hash", "digest"):
        first: dict[str, int] = {}
        for m in members:
            value = getattr(m, key)
            if value:
                if value in first:
                    uf.union(first[value], m.pk)
                else:
                    first[value] = m.pk
    for a, b in simhash_links(members, max_distance):
        uf.union(a, b)
    groups: dict[int, list[Member]] = defaultdict(list)
    for m in members:
        groups[uf.find(m.pk)].append(m)
    return [sorted(g, key=lambda m: m.digest) for g in groups.values()]


def largest_remainder(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` by ``ratios`` into whole numbers adding up to ``n`` (Hamilton's method).

    Ties in the remainders go to the earlier split (train, then validation, then test).
    """
    quotas = [n * r for r in ratios]
    counts = [math.floor(q + 1e-9) for q in quotas]
    left = n - sum(counts)
    order = sorted(range(len(ratios)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def _stratum_of(group: list[Member]) -> str:
    counts = Counter(m.stratum for m in group)
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def assign_splits(groups: Sequence[list[Member]], ratios: Sequence[float], seed: int) -> dict[int, str]:
    """pk → split for every member (module docstring, steps 3–4)."""
    strata: dict[str, list[list[Member]]] = defaultdict(list)
    for group in groups:
        strata[_stratum_of(group)].append(group)
    active = [i for i, r in enumerate(ratios) if r > 0]
    result: dict[int, str] = {}
    for stratum in sorted(strata):
        stratum_groups = sorted(strata[stratum], key=lambda g: g[0].digest)
        random.Random(f"{seed}:{stratum}").shuffle(stratum_groups)
        targets = largest_remainder(sum(len(g) for g in stratum_groups), ratios)
        filled = [0] * len(ratios)
        for group in stratum_groups:
            i = max(active, key=lambda j: (targets[j] - filled[j], -j))
            filled[i] += len(group)
            for m in group:
                result[m.pk] = SPLITS[i]
    return result


def minimum_pairs_for_split(ratios: Sequence[float]) -> int:
    """The fewest pairs (of one department) for which every split with a ratio above 0 gets
    at least one under ``largest_remainder``: 7 for 0.8/0.1/0.1, 10 for 0.9/0.05/0.05."""
    smallest = min(r for r in ratios if r > 0)
    bound = math.ceil(1 / smallest - 1e-9)  # floor(n * r) >= 1 from here on
    active = [i for i, r in enumerate(ratios) if r > 0]
    for n in range(1, min(bound, 100_000) + 1):
        counts = largest_remainder(n, ratios)
        if all(counts[i] >= 1 for i in active):
            return n
    return bound


def _empty_split_error(ratios, counts: dict[str, int], members: Sequence[Member]) -> InvalidInput | None:
    """A split with a ratio above 0 that got no pair: refuse, naming the minimum needed."""
    empty = [s for s, r in zip(SPLITS, ratios, strict=True) if r > 0 and counts[s] == 0]
    if not empty:
        return None
    needed = minimum_pairs_for_split(ratios)
    largest = max(Counter(m.stratum for m in members).values())
    names = pgettext("list separator", ", ").join(str(DatasetItem.Split(s).label) for s in empty)
    message = _(
        "The %(splits)s split would be empty. With split ratios %(ratios)s every split gets a pair only "
        "when a department has at least %(needed)s approved pairs (near-duplicates stay together and "
        "count as one); this selection has %(n)s approved pairs, %(largest)s in its largest department. "
        "Approve more pairs, widen the selection, or set the ratio of the empty split to 0."
    ) % {
        "splits": names,
        "ratios": "/".join(f"{r:g}" for r in ratios),
        "needed": needed,
        "n": len(members),
        "largest": largest,
    }
    return InvalidInput(message, details={"empty_splits": empty, "minimum_pairs": needed, "selected": len(members)})


# --------------------------------------------------------------------------- freeze


def _near_duplicate_edges() -> list[tuple[int, int]]:
    return list(
        QAPair.objects.exclude(near_duplicate_of=None)
        .values_list("pk", "near_duplicate_of_id")
        .iterator(chunk_size=5000)
    )


def _members(selection) -> list[Member]:
    members = []
    pairs = selection.select_related("department").prefetch_related("tags").order_by("pk")
    for pair in pairs.iterator(chunk_size=2000):
        content = pair_content(pair)
        members.append(
            Member(
                pk=pair.pk,
                digest=item_digest(content),
                stratum=content["department"],
                content_hash=pair.content_hash,
                simhash=pair.simhash,
                synthetic=pair.synthetic,
                content=content,
            )
        )
    return members


def _keep_tested_prompts_out_of_training(groups: Sequence[list[Member]], assignment: dict[int, str]) -> list[int]:
    """Move to test every group holding a question that an evaluation test split already asks
    (the test split of a dataset version an evaluation ran on, or of a preference version): no
    prompt of an evaluation test split enters training (docs/preferences.md). Returns the ids moved."""
    from curation.services.preferences import dataset_item_prompt_key, evaluated_test_prompt_keys

    tested = evaluated_test_prompt_keys()
    if not tested:
        return []
    moved = []
    for group in groups:
        if any(dataset_item_prompt_key(m.content) in tested for m in group):
            for m in group:
                if assignment[m.pk] != "test":
                    assignment[m.pk] = "test"
                    moved.append(m.pk)
    return sorted(moved)


MAX_LISTED_PAIRS = 50


def identifier_pairs_error(flagged: Sequence[tuple[int, list]]) -> InvalidInput:
    """The refusal of a freeze whose selection holds pairs with unmasked identifiers;
    ``details["identifier_pairs"]`` lists them (id and kinds) for the form, API and command."""
    from curation.services.review import identifier_kinds_text

    listed = ", ".join(f"#{pk}" for pk, _found in flagged[:MAX_LISTED_PAIRS])
    if len(flagged) > MAX_LISTED_PAIRS:
        listed += ", …"
    message = ngettext(
        "%(n)s selected approved pair holds unmasked personal identifiers (%(ids)s); identifiers never "
        "reach a dataset version, so mask it first.",
        "%(n)s selected approved pairs hold unmasked personal identifiers (%(ids)s); identifiers never "
        "reach a dataset version, so mask them first.",
        len(flagged),
    ) % {"n": len(flagged), "ids": listed}
    details = [{"id": pk, "kinds": sorted({f.get("kind") for f in found or ()})} for pk, found in flagged]
    for row, (_pk, found) in zip(details, flagged, strict=True):
        row["kinds_text"] = identifier_kinds_text(found)
    return InvalidInput(message, details={"identifier_pairs": details})


def _clear_identifiers(user, selection, *, mask_identifiers: bool, expected: Iterable[int] | None) -> list[int]:
    """Refuse the freeze while a selected pair holds unmasked identifiers, unless the caller
    asked to mask them (``expected``: only the pairs the user was shown; any other one is
    refused again). Returns the ids masked."""
    from curation.services.editing import qa_pairs_mask_identifiers

    flagged = list(selection.filter(has_identifiers=True).order_by("pk").values_list("pk", "identifiers"))
    if not flagged:
        return []
    unexpected = [row for row in flagged if expected is not None and row[0] not in set(expected)]
    if not mask_identifiers or unexpected:
        raise identifier_pairs_error(unexpected or flagged)
    masked = qa_pairs_mask_identifiers(editor=user, pair_ids=[pk for pk, _found in flagged])
    left = list(selection.filter(has_identifiers=True).order_by("pk").values_list("pk", "identifiers"))
    if left:
        raise identifier_pairs_error(left)
    return masked


def dataset_version_freeze(
    *,
    user,
    name: str,
    description: str = "",
    departments: Iterable = (),
    tags: Iterable = (),
    filters: dict | None = None,
    split: Sequence[float] | str = DEFAULT_SPLIT,
    seed: int = 42,
    mask_identifiers: bool = False,
    expected_flagged: Iterable[int] | None = None,
) -> DatasetVersion:
    """Freeze the approved pairs matching the filters into a new, immutable version.

    Curators and admins only. ``filters`` may hold ``synthetic`` (True / False / None) and
    ``source`` / ``sources``. Raises ``InvalidInput`` for a bad name, ratio, seed or filter,
    for an empty selection, for a split with a ratio above 0 that would get no pair (naming
    the minimum number of pairs needed) and while a selected pair holds unmasked identifiers
    (``details["identifier_pairs"]``); nothing is written then. ``mask_identifiers`` masks
    those pairs first (audited per pair), in the same transaction; ``expected_flagged``
    limits that to the pairs the user was shown.
    """
    if not has_role(user, CURATOR):
        raise NotAllowed(_("Only curators and admins can freeze dataset versions."))
    name = _name_clean(name)
    ratios = split_ratios_clean(split)
    seed = _seed_clean(seed)
    chosen = version_filters_clean(departments=departments, tags=tags, filters=filters)
    description = str(description or "").strip()

    with transaction.atomic():
        if not chosen.queryset().exists():
            raise InvalidInput(
                _("No approved QA pairs match these filters; approve pairs or widen the selection."),
                details={"filters": chosen.as_dict()},
            )
        masked = _clear_identifiers(user, chosen.queryset(), mask_identifiers=mask_identifiers, expected=expected_flagged)
        members = _members(chosen.queryset())
        groups = cluster_members(members, near_duplicate_edges=_near_duplicate_edges())
        assignment = assign_splits(groups, ratios, seed)
        held_out = _keep_tested_prompts_out_of_training(groups, assignment)
        by_split: dict[str, list[Member]] = {s: [] for s in SPLITS}
        for m in members:
            by_split[assignment[m.pk]].append(m)
        counts = {s: len(by_split[s]) for s in SPLITS}
        error = _empty_split_error(ratios, counts, members)
        if error is not None:
            raise error
        synthetic_count = sum(1 for m in members if m.synthetic)

        version = DatasetVersion(
            name=name,
            description=description,
            created_by=user,
            filters=chosen.as_dict(),
            split_ratios=list(ratios),
            seed=seed,
            content_hash=version_hash((m.digest, assignment[m.pk]) for m in members),
            counts=counts,
            synthetic_count=synthetic_count,
        )
        version.full_clean()
        try:
            with transaction.atomic():
                version.save()
        except IntegrityError:
            raise InvalidInput(
                _("A dataset version named “%(name)s” already exists; versions are permanent, so pick another name.")
                % {"name": name}
            ) from None

        items = []
        for split in SPLITS:
            for position, m in enumerate(sorted(by_split[split], key=lambda m: (m.digest, m.pk))):
                items.append(
                    DatasetItem(version=version, qa_pair_id=m.pk, split=split, position=position, content=m.content)
                )
        DatasetItem.objects.bulk_create(items, batch_size=1000)

        audit_record(
            actor=user,
            action="dataset_version.freeze",
            target=version,
            summary=f"Froze dataset version {name}: {counts['train']}/{counts['validation']}/{counts['test']}",
            changes={
                "content_hash": version.content_hash,
                "counts": counts,
                "synthetic_count": synthetic_count,
                "filters": version.filters,
                "split_ratios": version.split_ratios,
                "seed": seed,
                "masked_pairs": masked,
                "held_out": held_out,
            },
        )
    version.masked_pairs = masked
    version.held_out = held_out  # not stored: pairs moved to test because an evaluation tests their question  # not stored: what this freeze masked first, for the caller to report
    return version


# --------------------------------------------------------------------------- export


def _exporter(format: str):
    from curation.exports import EXPORTERS

    try:
        return EXPORTERS[format]
    except (KeyError, TypeError):
        raise InvalidInput(
            _("Unknown export format “%(format)s”; choose one of %(choices)s.")
            % {"format": format, "choices": ", ".join(EXPORTERS)}
        ) from None


def _check_reader(user) -> None:
    if user is not None and not has_role(user, CURATOR, CLINICIAN):
        raise NotAllowed(_("Your role does not allow exporting dataset versions."))


def dataset_version_export(*, version: DatasetVersion, format: str, out_dir: Path, user=None) -> list[Path]:
    """Write ``version`` in ``format`` under ``out_dir`` and record the export.

    ``user`` None means a trusted caller (the ``export_dataset`` command).
    """
    _check_reader(user)
    return export_recorded(
        _exporter(format), version=version, format=format, out_dir=out_dir, user=user,
        action="dataset_version.export", summary=f"Exported dataset version {version.name} as {format}",
    )


def export_recorded(exporter, *, version, format: str, out_dir: Path, user, action: str, summary: str) -> list[Path]:
    """Run ``exporter(version, out_dir)`` (creating ``out_dir``) and audit which files it wrote;
    the files. Dataset and preference versions both export through it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = exporter(version, out_dir)
    audit_record(
        actor=user,
        action=action,
        target=version,
        summary=summary,
        changes={"format": format, "files": [p.relative_to(out_dir).as_posix() for p in paths]},
    )
    return paths


def dataset_version_export_zip(*, version: DatasetVersion, format: str, user=None):
    """The export as a .zip in an anonymous temporary file (deleted when closed).

    Returns (open binary file positioned at 0, download file name).
    """
    from curation.exports.base import file_stem

    _check_reader(user)
    _exporter(format)
    archive = zip_export(lambda out_dir: dataset_version_export(version=version, format=format, out_dir=out_dir, user=user))
    return archive, f"{file_stem(version)}-{format}.zip"


def zip_export(write, *, prefix: str = "medportal-export-"):
    """Run ``write(out_dir)`` (an export that returns the files it wrote) in a temporary folder and
    return those files as a .zip in an anonymous temporary file, positioned at 0 (deleted when
    closed; nothing is left behind when ``write`` fails). Dataset and preference versions both use it."""
    archive = tempfile.TemporaryFile(suffix=".zip")
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            out_dir = Path(tmp)
            paths = write(out_dir)
            with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for path in paths:
                    zf.write(path, arcname=path.relative_to(out_dir).as_posix())
        archive.seek(0)
    except BaseException:
        archive.close()
        raise
    return archive
