"""fetch_pubmed against a real local HTTP server answering recorded E-utilities responses.

The server answers as NCBI does: esearch's eSearchResult XML, efetch's PubmedArticleSet, and
HTTP 429 with NCBI's JSON body to a client that sends more than 3 requests in one second (10
with an API key). It listens on 127.0.0.1 and stops when the test ends.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import CommandError, call_command

from curation.literature.eutils import RateLimiter
from curation.models import Document, LiteratureImport

DATA = Path(__file__).parent / "literature_data"


class RecordedEutils:
    def __init__(self, *, esearch: str = "esearch_aspirin.xml"):
        self.esearch = esearch
        self.requests: list[dict] = []
        self.refused = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, params: dict):
                now = time.monotonic()
                path = urlsplit(self.path).path
                limit = 10 if params.get("api_key") else 3
                with owner.lock:
                    # NCBI's rule: no more than `limit` requests in any one second.
                    recent = [r for r in owner.requests if now - r["t"] < 1.0]
                    owner.requests.append({"t": now, "path": path, "params": params})
                if len(recent) >= limit:
                    owner.refused += 1
                    body = json.dumps({"error": "API rate limit exceeded", "api-key": "", "count": str(limit + 1), "limit": str(limit)})
                    return self._send(429, body.encode(), "application/json", {"Retry-After": "1"})
                if path.endswith("/esearch.fcgi"):
                    return self._send(200, (DATA / owner.esearch).read_bytes(), "text/xml; charset=UTF-8")
                if path.endswith("/efetch.fcgi"):
                    return self._send(200, (DATA / "efetch_pubmed.xml").read_bytes(), "text/xml; charset=UTF-8")
                return self._send(404, b"Not Found", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._answer({k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self._answer({k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/entrez/eutils/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def eutils(monkeypatch):
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    with RecordedEutils() as server:
        monkeypatch.setenv("NCBI_EUTILS_URL", server.url)
        yield server


@pytest.mark.django_db
def test_fetch_searches_then_fetches_and_imports_with_a_row_report(eutils, curator, capsys):
    call_command("fetch_pubmed", "--query", "aspirin", "--email", "curator@example.org", "--as-user", "curator", "--json")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["found"] == 3 and result["created"] == 2 and result["skipped"] == 1
    batch = LiteratureImport.objects.get(pk=result["import"])
    assert batch.query == "aspirin" and batch.format == "pubmed_xml" and batch.created_by == curator
    assert set(Document.objects.values_list("pmid", flat=True)) == {"31000001", "31000002"}
    search, fetch = eutils.requests
    assert search["path"] == "/entrez/eutils/esearch.fcgi" and fetch["path"] == "/entrez/eutils/efetch.fcgi"
    assert search["params"]["term"] == "aspirin" and search["params"]["db"] == "pubmed"
    assert fetch["params"]["id"] == "31000003,31000002,31000001" and fetch["params"]["retmode"] == "xml"
    for r in eutils.requests:
        assert r["params"]["email"] == "curator@example.org" and r["params"]["tool"] == "medportal" and "api_key" not in r["params"]
    # Without a key, requests are about a third of a second apart (client-side spacing; the
    # server's clock sees the arrival, a few milliseconds of network either way).
    assert fetch["t"] - search["t"] >= 1 / 3 - 0.05 and eutils.refused == 0

    # Fetching again stores nothing new: every article is a duplicate.
    call_command("fetch_pubmed", "--query", "aspirin", "--email", "curator@example.org", "--as-user", "curator", "--json")
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["created"] == 0 and again["duplicates"] == 2


@pytest.mark.django_db
def test_an_api_key_from_the_environment_is_sent_and_allows_ten_requests_a_second(eutils, curator, monkeypatch, capsys):
    monkeypatch.setenv("NCBI_API_KEY", "0123456789abcdef")
    call_command("fetch_pubmed", "--query", "aspirin", "--email", "c@example.org", "--as-user", "curator", "--json")
    assert [r["params"].get("api_key") for r in eutils.requests] == ["0123456789abcdef"] * 2
    assert eutils.refused == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["created"] == 2


def test_the_rate_limiter_spaces_calls():
    clock = [0.0]
    slept = []

    def sleep(s):
        slept.append(round(s, 6))
        clock[0] += s

    limiter = RateLimiter(3.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(4):
        limiter.wait()
    assert slept == [round(1.05 / 3, 6)] * 3
    clock[0] += 5
    limiter.wait()
    assert len(slept) == 3  # a pause long enough needs no wait


def test_the_next_request_waits_a_full_interval_after_a_slow_answer():
    """NCBI counts a request when it arrives: after a request that took 0.3 s (it may have
    arrived late), the next one waits the whole interval from its answer, not from its start
    (the burst test met a 429 on a loaded machine)."""
    clock = [100.0]
    slept = []

    def sleep(s):
        slept.append(round(s, 6))
        clock[0] += s

    limiter = RateLimiter(3.0, clock=lambda: clock[0], sleep=sleep)
    limiter.wait()
    clock[0] += 0.3  # the request is on its way and answered
    limiter.finished()
    limiter.wait()
    assert slept == [round(1.05 / 3, 6)]


@pytest.mark.django_db
def test_esearch_errors_and_bad_input_are_reported_and_import_nothing(curator, monkeypatch):
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    with RecordedEutils(esearch="esearch_error.xml") as server:
        monkeypatch.setenv("NCBI_EUTILS_URL", server.url)
        with pytest.raises(CommandError, match="esearch: Invalid query: unbalanced parentheses"):
            call_command("fetch_pubmed", "--query", "aspirin (", "--email", "c@example.org", "--as-user", "curator")
        with pytest.raises(CommandError, match="contact email"):
            call_command("fetch_pubmed", "--query", "aspirin", "--email", "nobody", "--as-user", "curator")
        with pytest.raises(CommandError, match="personal identifier"):
            call_command("fetch_pubmed", "--query", "患者 13812345678", "--email", "c@example.org", "--as-user", "curator")
        assert len(server.requests) == 1  # only the erroneous search reached the server
    with pytest.raises(CommandError, match="Unknown user"):
        call_command("fetch_pubmed", "--query", "x", "--email", "c@example.org", "--as-user", "ghost")
    assert not Document.objects.exists() and not LiteratureImport.objects.exists()


@pytest.mark.django_db
def test_a_query_that_finds_nothing_imports_nothing(curator, monkeypatch, capsys):
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    with RecordedEutils(esearch="esearch_none.xml") as server:
        monkeypatch.setenv("NCBI_EUTILS_URL", server.url)
        call_command("fetch_pubmed", "--query", "zzzxqy", "--email", "c@example.org", "--as-user", "curator", "--json")
        assert [r["path"] for r in server.requests] == ["/entrez/eutils/esearch.fcgi"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["found"] == 0


@pytest.mark.django_db
def test_a_server_that_cannot_be_reached_is_a_clear_error(curator, monkeypatch):
    monkeypatch.setenv("NCBI_EUTILS_URL", "http://127.0.0.1:9/entrez/eutils/")
    monkeypatch.setattr("curation.literature.eutils.RETRIES", 0)
    with pytest.raises(CommandError, match="PubMed could not be searched: esearch.fcgi: ConnectError"):
        call_command("fetch_pubmed", "--query", "aspirin", "--email", "c@example.org", "--as-user", "curator")


def test_a_burst_over_the_limit_is_refused_by_the_recorded_server_and_the_client_stays_under_it(monkeypatch):
    """The server's rule is real: a burst of requests is answered 429; the client's limiter keeps
    ten requests in a row under it."""
    import httpx

    from curation.literature.eutils import Eutils

    with RecordedEutils() as server:
        statuses = [httpx.post(server.url + "esearch.fcgi", data={"term": "x"}).status_code for _ in range(5)]
        assert 429 in statuses
        server.requests.clear()
        server.refused = 0
        client = Eutils(email="c@example.org", base_url=server.url)
        for _ in range(10):
            client.search("aspirin")
        client.close()
        assert server.refused == 0 and client.requests == 10
