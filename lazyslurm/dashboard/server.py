"""The dashboard's HTTP server: the standard library's ``ThreadingHTTPServer``, bound to
127.0.0.1, one page of HTML+JS+SVG, JSON, and one server-sent-events stream per page.

Every request needs the token (``?token=`` or the ``X-Lazyslurm-Token`` header), else 403;
the ``Host`` header must name this server (no DNS rebinding). Actions are POSTs whose
token comes in the header or a form field (never the URL), from no other origin.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lazyslurm.dashboard.model import Hub, RunWatch

__all__ = ["TOKEN_HEADER", "DashboardServer"]

log = logging.getLogger("lazyslurm.dashboard")

TOKEN_HEADER = "X-Lazyslurm-Token"
LOG_EVERY_S = 1.0  # a log tail is read this often while its element runs
LOG_MAX_CHARS = 256_000  # the most of a log sent at once (its tail)
BEAT_S = 15.0  # an SSE comment this often keeps proxies and the browser content
RUNS_WAIT_S = 3.0
FIRST_POLL_WAIT_S = 3.0  # a page asked for a run not open yet: wait this long to embed it
MAX_BODY = 64 * 1024
DETAIL_RETRY_S = 2.0  # an element's details lacking sacct's node or end: asked again
DETAIL_TRIES = 15
_ENDED = ("DONE", "FAILED", "CANCELLED")
_PATH = re.compile(
    r"^/api/run/([^/]+)(?:/(cancel|attach|timeline|usage|element|logs)"
    r"(?:/([^/]+)/(\d+))?)?$"
)


def _static(name: str) -> str:
    return resources.files("lazyslurm.dashboard").joinpath("static", name).read_text("utf-8")


def _json_for_html(data: Any) -> str:
    """JSON safe inside a ``<script>`` element."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class DashboardServer(ThreadingHTTPServer):
    """The server of one :class:`~lazyslurm.dashboard.model.Hub`, on 127.0.0.1 only."""

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, hub: Hub, token: str, port: int = 0) -> None:
        self.hub = hub
        self.token = token
        self.stopping = False
        self.page = (_static("index.html"), _static("app.css"), _static("app.js"))
        super().__init__(("127.0.0.1", port), _Handler)
        self.port = self.server_address[1]
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.origins = {f"http://{h}" for h in self.hosts}


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "lazyslurm-dashboard"
    sys_version = ""

    # -- plumbing
    def log_message(self, format: str, *args: Any) -> None:
        # never the query string: it holds the token
        log.debug("%s %s", self.command, urlsplit(self.path).path)

    def _headers(
        self, code: int, ctype: str, length: int | None = None, *, nonce: str = ""
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        style = f"'nonce-{nonce}'" if nonce else "'none'"
        # only the page's own scripts run (nonce); 'unsafe-eval' lets a browser driver's
        # expressions (Playwright's wait_for_function) run in it: the page never evals
        script = f"{style} 'unsafe-eval'" if nonce else "'none'"
        self.send_header(
            "Content-Security-Policy",
            f"default-src 'none'; script-src {script}; style-src {style}; img-src data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        )
        self.end_headers()

    def _send(self, code: int, body: bytes, ctype: str, nonce: str = "") -> None:
        self._headers(code, ctype, len(body), nonce=nonce)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, code: int = 200) -> None:
        self._send(code, json.dumps(data).encode(), "application/json")

    def _error(self, code: int, message: str) -> None:
        if code >= 400 and code != 404:
            log.debug("refused %s %s: %s", self.command, urlsplit(self.path).path, message)
        self._json({"error": message}, code)

    def _allowed(self, query: dict[str, list[str]], form: dict[str, list[str]] | None) -> bool:
        """Host names this server; the token matches; a POST comes from this origin and
        carries its token in a header or a form field."""
        srv = self.server
        if self.headers.get("Host", "") not in srv.hosts:
            self._error(403, "forbidden: the Host header does not name this dashboard")
            return False
        if form is not None:  # a POST
            origin = self.headers.get("Origin")
            if origin is not None and origin not in srv.origins:
                self._error(403, "forbidden: a request from another origin")
                return False
            if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
                self._error(403, "forbidden: a request from another site")
                return False
            given = self.headers.get(TOKEN_HEADER) or (form.get("token") or [""])[0]
        else:
            given = self.headers.get(TOKEN_HEADER) or (query.get("token") or [""])[0]
        if not given or not hmac.compare_digest(given.encode(), srv.token.encode()):
            self._error(403, "forbidden: this dashboard needs its token (see the URL it printed)")
            return False
        return True

    # -- GET
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._allowed(query, None):
            return
        try:
            self._route_get(url.path, query)
        except KeyError as exc:
            self._error(404, str(exc.args[0]) if exc.args else "not found")
        except (ConnectionError, TimeoutError):  # the page went away
            pass
        except Exception as exc:
            log.debug("dashboard error", exc_info=True)
            self._error(500, " ".join(str(exc).split()) or type(exc).__name__)

    def _route_get(self, path: str, query: dict[str, list[str]]) -> None:
        hub = self.server.hub
        if path in ("/", "/index.html"):
            self._page(query)
            return
        if path == "/api/runs":
            self._json(hub.runs(refresh="refresh" in query))
            return
        if path == "/api/events":
            self._events(query)
            return
        m = _PATH.match(path)
        if m is None or m.group(2) in ("cancel", "attach"):
            if m is not None:
                self._error(405, "actions are POST requests (with the token in a header)")
                return
            self._error(404, f"no page {path}")
            return
        watch = hub.watch(m.group(1))
        what = m.group(2)
        if what is None:
            watch.wait_first(FIRST_POLL_WAIT_S)
            self._json({"structure": watch.structure(), "states": watch.states()})
        elif what == "timeline":
            self._json(watch.timeline())
        elif what == "usage":
            self._json(watch.usage())
        elif m.group(3) is None:
            self._error(404, f"{what} needs /ARRAY_JOB/INDEX")
        elif what == "element":
            self._json(watch.element(m.group(3), int(m.group(4))))
        else:  # logs
            out, err = watch.logs(m.group(3), int(m.group(4)))
            self._json({"out": out[-LOG_MAX_CHARS:], "err": err[-LOG_MAX_CHARS:]})

    def _page(self, query: dict[str, list[str]]) -> None:
        import secrets

        hub = self.server.hub
        init: dict[str, Any] = {"runs": hub.runs(cached=True)}  # the stream brings news
        run_id = (query.get("run") or [""])[0]
        if run_id:
            try:
                watch = hub.watch(run_id)
                if watch.wait_first(FIRST_POLL_WAIT_S):
                    init["run"] = {"structure": watch.structure(), "states": watch.states()}
            except KeyError as exc:
                init["error"] = str(exc.args[0]) if exc.args else f"no run {run_id}"
        page, css, js = self.server.page
        nonce = secrets.token_urlsafe(16)
        body = (
            page.replace("__NONCE__", nonce)
            .replace("/*__CSS__*/", css)
            .replace("__INIT__", _json_for_html(init))
            .replace("/*__JS__*/", js)
        )
        self._send(200, body.encode(), "text/html; charset=utf-8", nonce=nonce)

    # -- the stream
    def _events(self, query: dict[str, list[str]]) -> None:
        """Server-sent events: ``runs``, and for ``run=RUN`` its ``structure`` and
        ``states``; for ``el=ARRAY_JOB:INDEX`` that element's ``element`` details and
        its ``log`` tail (appended as it grows)."""
        hub = self.server.hub
        run_id = (query.get("run") or [""])[0]
        el = (query.get("el") or [""])[0]
        watch: RunWatch | None = None
        error = ""
        if run_id:
            try:
                watch = hub.watch(run_id)
            except KeyError as exc:
                error = str(exc.args[0]) if exc.args else f"no run {run_id}"
        target: tuple[str, int] | None = None
        if watch is not None and el:
            aj, _, idx = el.rpartition(":")
            if idx.isdigit():
                target = (aj, int(idx))
        self._headers(200, "text/event-stream; charset=utf-8")
        if watch is not None:
            watch.subscribe(+1)
        try:
            self._stream(watch, target, error)
        except OSError:  # the page went away
            pass
        finally:
            if watch is not None:
                watch.subscribe(-1)

    def _emit(self, event: str, data: Any) -> None:
        text = json.dumps(data, separators=(",", ":"))
        self.wfile.write(f"event: {event}\ndata: {text}\n\n".encode())
        self.wfile.flush()

    def _stream(self, watch: RunWatch | None, target: tuple[str, int] | None, error: str) -> None:
        hub = self.server.hub
        self.wfile.write(b"retry: 2000\n\n")
        if error:
            self._emit("failure", {"error": error})
        sent_runs: Any = None
        sent_structure = sent_states = -1
        tail = _Tail()
        element_state = ""
        next_log = 0.0
        beat = time.monotonic()
        version = hub.version
        while not hub.closed and not self.server.stopping:
            runs_key = hub.runs_version()
            if runs_key != sent_runs:
                self._emit("runs", hub.runs())
                sent_runs = hub.runs_version()
            if watch is not None:
                if watch.structure_version != sent_structure and (
                    watch.snapshot is not None or watch.polled_at is not None
                ):
                    sent_structure = watch.structure_version
                    self._emit("structure", watch.structure())
                if watch.version != sent_states or sent_states < 0:
                    if watch.polled_at is not None:
                        sent_states = watch.version
                        self._emit("states", watch.states())
                if target is not None and time.monotonic() >= next_log:
                    next_log = time.monotonic() + LOG_EVERY_S
                    state = self._element_events(watch, target, tail, element_state)
                    element_state = state or element_state
            now = time.monotonic()
            if now - beat >= BEAT_S:
                self.wfile.write(b": beat\n\n")
                self.wfile.flush()
                beat = now
            wait = RUNS_WAIT_S
            if target is not None and (not tail.done or tail.incomplete):
                wait = max(0.05, min(wait, next_log - time.monotonic()))
            version = hub.wait(version, wait)

    def _element_events(
        self, watch: RunWatch, target: tuple[str, int], tail: _Tail, sent_state: str
    ) -> str:
        """The element's details when its state changed, and what its logs gained."""
        aj_id, index = target
        try:
            aj = watch.array_job(aj_id)
            if not 0 <= index < aj.size:
                raise KeyError(f"array job {aj_id} has elements 0-{aj.size - 1}")
        except KeyError as exc:
            if not tail.done:
                self._emit("failure", {"error": str(exc.args[0]) if exc.args else "no element"})
                tail.done = True
            return sent_state
        state, _ = watch.element_state(aj, index)
        now = time.monotonic()
        retry = tail.incomplete and tail.tries < DETAIL_TRIES and now >= tail.retry_at
        if state != sent_state or retry:
            try:
                details = watch.element(aj_id, index)
                self._emit("element", details)
                # sacct learns of an element a moment after Slurm starts or ends it: ask
                # again a few times while its node or end is missing
                tail.incomplete = bool(details["slurm_id"]) and (
                    not details["node"] or (state in _ENDED and details["end"] is None)
                )
            except Exception as exc:
                self._emit("failure", {"error": " ".join(str(exc).split())})
            tail.tries = tail.tries + 1 if state == sent_state else 0
            tail.retry_at = now + DETAIL_RETRY_S
            if state != sent_state:
                tail.done = False  # read the logs once more after any change
        if tail.done:
            return state
        try:
            out, err = watch.logs(aj_id, index)
        except Exception as exc:
            self._emit("failure", {"error": f"cannot read the logs: {exc}"})
            return state
        for stream, text in (("out", out), ("err", err)):
            update = tail.update(stream, text)
            if update is not None:
                self._emit("log", {"stream": stream, **update})
        if state in _ENDED:
            tail.done = True  # its logs are complete: read again only if its state changes
        return state

    # -- POST
    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._error(413, "request body too large")
            return
        raw = self.rfile.read(length) if length else b""
        form: dict[str, list[str]] = {}
        ctype = self.headers.get("Content-Type", "")
        try:
            if ctype.startswith("application/json") and raw:
                data = json.loads(raw)
                if isinstance(data, dict):
                    form = {k: [str(v)] for k, v in data.items() if k != "token"}
            elif raw:
                form = parse_qs(raw.decode("utf-8", "replace"))
        except ValueError:
            self._error(400, "the request body is neither a form nor JSON")
            return
        if not self._allowed(parse_qs(url.query), form):
            return
        m = _PATH.match(url.path)
        if m is None or m.group(2) not in ("cancel", "attach") or m.group(3) is not None:
            self._error(404, f"no action {url.path}")
            return
        try:
            if m.group(2) == "cancel":
                self._json(self._cancel(m.group(1), (form.get("array_job") or [""])[0]))
            else:
                watch = self.server.hub.reattach(m.group(1))
                self._json({"ok": True, "run": watch.id, "array_jobs": len(watch.run.array_jobs)})
        except KeyError as exc:
            self._error(404, str(exc.args[0]) if exc.args else "not found")
        except Exception as exc:
            self._error(500, " ".join(str(exc).split()) or type(exc).__name__)

    def _cancel(self, run_id: str, aj_id: str) -> dict[str, Any]:
        """Cancel a run (``Run.cancel``) or the unfinished elements of one array job."""
        watch = self.server.hub.watch(run_id)
        watch.wait_first(FIRST_POLL_WAIT_S)
        run = watch.run
        if run.handle is None:
            return {"ok": True, "cancelled": 0, "note": "nothing was submitted"}
        snap = watch.snapshot
        ajs = [watch.array_job(aj_id)] if aj_id else list(run.array_jobs)
        unfinished = [
            (aj.id, i)
            for aj in ajs
            for i, s in enumerate(snap.states.get(aj.id, ()) if snap else [])
            if s in ("PENDING", "RUNNING")
        ]
        if not aj_id:
            run.cancel()
        elif unfinished:
            run.cluster.backend.cancel_elements(run.handle, unfinished)
        watch.poll_now()
        log.info(
            "dashboard: cancelled %s%s (%d unfinished elements)",
            run_id,
            f" {aj_id}" if aj_id else "",
            len(unfinished),
        )
        return {"ok": True, "run": run_id, "array_job": aj_id or None, "cancelled": len(unfinished)}


class _Tail:
    """What of two logs a page has: send what they gained, or their tail anew."""

    def __init__(self) -> None:
        self.sent: dict[str, str] = {"out": "", "err": ""}
        self.started: dict[str, bool] = {"out": False, "err": False}
        self.done = False  # the element ended and its logs were read since
        self.incomplete = False  # its details lack what sacct will know in a moment
        self.tries = 0
        self.retry_at = 0.0

    def update(self, stream: str, text: str) -> dict[str, Any] | None:
        old = self.sent[stream]
        if self.started[stream] and text == old:
            return None
        first = not self.started[stream]
        self.started[stream] = True
        if (
            not first
            and len(text) > len(old)
            and text.startswith(old[-4096:], len(old) - len(old[-4096:]))
        ):
            grown = text[len(old) :]
            self.sent[stream] = text
            if len(grown) <= LOG_MAX_CHARS:
                return {"mode": "append", "text": grown}
        self.sent[stream] = text
        return {
            "mode": "replace",
            "text": text[-LOG_MAX_CHARS:],
            "truncated": len(text) > LOG_MAX_CHARS,
        }
