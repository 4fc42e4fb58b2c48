"""A small NCBI E-utilities client: ``esearch`` for the PMIDs of a query, ``efetch`` for their
PubMed XML. Django-free.

NCBI's rules (https://www.ncbi.nlm.nih.gov/books/NBK25497/): at most 3 requests a second
without an API key, 10 with one (``api_key``); every request names the ``tool`` and a contact
``email``. The limiter below spaces requests at least 1/3 s (1/10 s with a key) apart, across
threads. A 429 or 5xx answer is retried after a pause (``Retry-After`` when given).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

DEFAULT_BASE_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
TOOL = "medportal"
FETCH_BATCH = 200
MAX_RESULTS = 10_000  # esearch's retmax limit for one query (use usehistory for more)
RETRIES = 3


class EutilsError(Exception):
    """E-utilities answered with an error (or not at all); ``str()`` says which."""


class RateLimiter:
    """At most ``per_second`` calls a second: each ``wait()`` returns no earlier than
    ``1.05 / per_second`` after the previous one returned."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        # A little over 1/rate: NCBI counts requests per second on its own clock, and network
        # jitter must not make two requests look closer than they were sent.
        self.interval = 1.05 / per_second
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            if now < self._next:
                self.sleep(self._next - now)
                now = self.clock()
            self._next = now + self.interval

    def finished(self) -> None:
        """A request came back: the next one starts no earlier than ``interval`` from now.
        NCBI counts a request when it arrives; one that arrived late (a busy network or
        server) would otherwise be followed too closely by the next, sent on time."""
        with self._lock:
            self._next = max(self._next, self.clock() + self.interval)


@dataclass
class SearchResult:
    count: int
    ids: list[str]
    translation: str = ""


class Eutils:
    def __init__(self, *, email: str, api_key: str = "", base_url: str = DEFAULT_BASE_URL, timeout: float = 30.0, client: httpx.Client | None = None):
        if not email or "@" not in email:
            raise EutilsError("NCBI asks every E-utilities user for a contact email (--email).")
        self.email = email
        self.api_key = api_key
        self.base_url = base_url.rstrip("/") + "/"
        self.limiter = RateLimiter(10.0 if api_key else 3.0)
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self.requests = 0

    def close(self) -> None:
        self.client.close()

    def _params(self, **extra) -> dict:
        params = {"db": "pubmed", "tool": TOOL, "email": self.email, **extra}
        if self.api_key:
            params["api_key"] = self.api_key
        return params

    def _call(self, endpoint: str, params: dict) -> bytes:
        url = self.base_url + endpoint
        last = ""
        for attempt in range(RETRIES + 1):
            self.limiter.wait()
            self.requests += 1
            try:
                # POST: NCBI recommends it for long id lists; both endpoints accept it.
                response = self.client.post(url, data=params)
            except httpx.HTTPError as exc:
                self.limiter.finished()
                last = f"{endpoint}: {type(exc).__name__}: {exc}"
            else:
                self.limiter.finished()
                if response.status_code == 200:
                    return response.content
                last = f"{endpoint} answered HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in (429, 500, 502, 503, 504):
                    break
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit() and attempt < RETRIES:
                    time.sleep(min(float(retry_after), 30.0))
                    continue
            if attempt < RETRIES:
                time.sleep(0.5 * 2**attempt)
        raise EutilsError(last)

    def search(self, query: str, *, max_results: int = 100) -> SearchResult:
        """The PMIDs of ``query``, newest first as PubMed sorts them (at most ``max_results``)."""
        from curation.importers.base import ImportFileError, parse_xml

        if not query.strip():
            raise EutilsError("The query is empty.")
        retmax = max(0, min(int(max_results), MAX_RESULTS))
        body = self._call("esearch.fcgi", self._params(term=query, retmax=str(retmax), retmode="xml"))
        try:
            root = parse_xml(body)
        except ImportFileError as exc:
            raise EutilsError(f"esearch answered something that is not its XML: {exc}") from None
        if root.tag != "eSearchResult":
            raise EutilsError(f"esearch answered <{root.tag}>, not <eSearchResult>.")
        error = root.findtext("ERROR")
        if error:
            raise EutilsError(f"esearch: {error.strip()}")
        ids = [i.text.strip() for i in root.findall("IdList/Id") if i.text and i.text.strip().isdigit()]
        return SearchResult(
            count=int(root.findtext("Count", "0") or 0), ids=ids[:retmax], translation=(root.findtext("QueryTranslation") or "").strip()
        )

    def fetch(self, pmids: list[str]) -> Iterator[bytes]:
        """PubMed XML (one ``PubmedArticleSet`` per batch of ``FETCH_BATCH`` ids)."""
        for start in range(0, len(pmids), FETCH_BATCH):
            batch = pmids[start : start + FETCH_BATCH]
            yield self._call("efetch.fcgi", self._params(id=",".join(batch), retmode="xml", rettype="abstract"))
