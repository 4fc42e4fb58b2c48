"""Real local HTTP servers on 127.0.0.1 that answer as an OpenAI-compatible service does, or fail as
one does: wrong key (401), unknown model (404), rate limit (429 with Retry-After), too slow, a
malformed stream, a stream cut off. They record what they were sent, and stop when the ``with``
block ends (daemon threads: they never outlive the test process).

They stand in for a hosted API (OpenAI and the like): MedPortal's own models are never faked —
tests that need real answers use ``OpenAIServer`` over the demo model.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = ["The ", "hosted ", "answer."]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    server: HostedStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}, headers)

    def _auth(self) -> bool:
        if self.server.api_key and self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            self._error(401, "Incorrect API key provided.")
            return False
        return True

    def do_GET(self):  # noqa: N802
        if not self._auth():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.server.models]})
        else:
            self._error(404, "no route")

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.received.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization", "")})
        if not self._auth():
            return
        mode = self.server.mode
        if mode == "429" and self.server.rate_limited < self.server.limit_times:
            self.server.rate_limited += 1
            self._error(429, "Rate limit reached.", {"Retry-After": self.server.retry_after})
            return
        if body.get("model") not in self.server.models:
            self._error(404, f"The model `{body.get('model')}` does not exist.")
            return
        if mode == "slow":
            time.sleep(self.server.delay_s)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def send(data: str) -> None:
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        def chunk(content: str | None, finish: str | None = None) -> str:
            delta = {} if content is None else {"content": content}
            return json.dumps({"object": "chat.completion.chunk", "model": body["model"], "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        try:
            if mode == "malformed":
                send(chunk(ANSWER[0]))
                send("{this is not json")
                return
            if mode == "cut":
                send(chunk(ANSWER[0]))
                return  # the connection closes: no finish reason, no [DONE]
            pieces = [ANSWER[0] + "\x00", "\x00", *ANSWER[1:]] if mode == "nul" else ANSWER
            for piece in pieces:
                send(chunk(piece))
            send(chunk(None, "stop"))
            send("[DONE]")
        except OSError:
            pass


class HostedStandIn(ThreadingHTTPServer):
    """``mode``: "ok", "429" (``limit_times`` refusals with ``Retry-After``, then answers), "slow"
    (waits ``delay_s`` before answering), "malformed", "cut", "nul" (NUL characters in the deltas). ``api_key``: 401 without it."""

    daemon_threads = True

    def __init__(self, *, mode: str = "ok", models=("gpt-4o",), api_key: str = "", retry_after: str = "0", limit_times: int = 1, delay_s: float = 3.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.models, self.api_key = mode, list(models), api_key
        self.retry_after, self.limit_times, self.delay_s = retry_after, limit_times, delay_s
        self.rate_limited = 0
        self.received: list[dict] = []
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> HostedStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
