"""A live web dashboard of a cluster's runs: ``lazyslurm dashboard`` and ``run.dashboard()``.

It serves one local page (standard library only: ``http.server`` and server-sent
events) over the connection the cluster already has (local, Slurm on this host, SSH):
the runs; a run's DAG of array jobs coloured by state, a grid of its elements, its
dynamic subgraphs as they appear, the plan's resources and worst case; an element's
logs (live tail), error and remote traceback, attempts and node; a timeline; the usage;
and actions (cancel a run or an array job, re-attach). See docs/dashboard.md.

Bound to 127.0.0.1, with a random token in its URL: a request without it gets 403.

>>> from lazyslurm import Cluster, Run
>>> with Dashboard(Cluster("sync", workdir=getfixture("tmp_path")), run_type=Run) as board:
...     board.url.startswith("http://127.0.0.1:") and "?token=" in board.url
True
"""

from __future__ import annotations

import secrets
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from lazyslurm.cluster import Cluster

# lazyslurm.execute.Run: handed in by run.dashboard() and the command line (execute
# imports this package, so this package does not import execute)
_Run = Any

__all__ = ["Dashboard", "for_run", "serve"]

# the dashboards this process serves, per cluster: run.dashboard() twice reuses one
_SERVING: weakref.WeakKeyDictionary[Any, Dashboard] = weakref.WeakKeyDictionary()
_SERVING_LOCK = threading.Lock()


class Dashboard:
    """A dashboard server for one cluster (not started until :meth:`start` or
    :meth:`serve_forever`; ``with Dashboard(cluster, run_type=Run) as board:`` starts and stops it).

    ``run_type`` is :class:`lazyslurm.Run` (what attaches, polls and cancels runs).
    ``port=0`` picks a free port. ``url`` holds the token: share it only with yourself.
    """

    def __init__(
        self, cluster: Cluster, *, run_type: type[_Run], port: int = 0, token: str | None = None
    ) -> None:
        from lazyslurm.dashboard.model import Hub
        from lazyslurm.dashboard.server import DashboardServer

        self.cluster = cluster
        self.token = token or secrets.token_urlsafe(24)
        self.hub = Hub(cluster, run_type)
        self._server = DashboardServer(self.hub, self.token, port)
        self.port = self._server.port
        self._thread: threading.Thread | None = None
        self.running = False
        self._closed = False
        self.run_id: str | None = None  # the run ``url`` opens (None: the runs list)

    def __repr__(self) -> str:
        return f"Dashboard({self.url_for()} of {self.cluster!r})"

    @property
    def url(self) -> str:
        """The page of ``run_id`` (else of every run), with the token."""
        return self.url_for(self.run_id)

    def url_for(self, run_id: str | None = None) -> str:
        """The page of one run (or of every run), with the token."""
        base = f"http://127.0.0.1:{self.port}/?token={quote(self.token)}"
        return f"{base}&run={quote(run_id)}" if run_id else base

    def open_run(self, run: _Run | str) -> str:
        """Start watching a run (a :class:`~lazyslurm.execute.Run` or a run id); its URL.
        ``KeyError`` if there is no such run."""
        if isinstance(run, str):
            return self.url_for(self.hub.watch(run).id)
        if run.handle is None:  # nothing was submitted: the runs list
            return self.url_for()
        quiet = type(run)(self.cluster, run.handle, [], plan=run.plan)  # no callbacks
        return self.url_for(self.hub.watch(run.id, quiet).id)

    def start(self) -> Dashboard:
        """Serve in a background thread (returns at once)."""
        if self._thread is None:
            self.running = True
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"lazyslurm-dashboard-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (or Ctrl-C, which stops it)."""
        self.running = True
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving and close the port: pollers end, open pages see the stream close."""
        if self._closed:
            return
        self._closed = True
        self.running = False
        self._server.stopping = True
        self.hub.close()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        with _SERVING_LOCK:
            if _SERVING.get(self.cluster) is self:
                del _SERVING[self.cluster]

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _repr_html_(self) -> str:
        import html

        url = html.escape(self.url)
        return (
            f"<p>lazyslurm dashboard: <a href='{url}' target='_blank' rel='noreferrer'>"
            f"{html.escape(self.url.split('?')[0])}</a>"
            f"{' run ' + html.escape(self.run_id) if self.run_id else ''} (token in the link; "
            f"<code>.stop()</code> to stop)</p>"
        )


def serve(
    cluster: Cluster,
    *,
    run_type: type[_Run],
    run: str | None = None,
    port: int = 0,
    open_browser: bool = False,
    block: bool = True,
    out: Any = None,
) -> Dashboard:
    """Start a dashboard of ``cluster`` and print its URL (to ``out``, default stdout).

    ``run`` opens that run first (its URL is printed). ``block`` serves until Ctrl-C;
    else it serves in the background and returns the :class:`Dashboard`.
    """
    board = Dashboard(cluster, run_type=run_type, port=port)
    if run:
        try:
            board.open_run(run)
        except BaseException:  # no such run: close the port before saying so
            board.stop()
            raise
        board.run_id = run
    url = board.url
    stream = out if out is not None else sys.stdout
    print(f"lazyslurm dashboard: {url}", file=stream, flush=True)
    print(
        "(127.0.0.1 only; the token in the URL is the key: Ctrl-C stops)", file=stream, flush=True
    )
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    if not block:
        return board.start()
    try:
        board.serve_forever()
    except KeyboardInterrupt:
        pass
    return board


def for_run(run: _Run, *, port: int = 0, open_browser: bool = False) -> Dashboard:
    """``run.dashboard()``: the running dashboard of the run's cluster (started if none),
    now watching ``run``; its ``url`` opens that run (the last one opened)."""
    with _SERVING_LOCK:
        board = _SERVING.get(run.cluster)
        if board is None or not board.running or (port and board.port != port):
            board = Dashboard(run.cluster, run_type=type(run), port=port).start()
            _SERVING[run.cluster] = board
    board.open_run(run)
    board.run_id = run.id or None  # a run with nothing to run: the runs list
    if open_browser:
        import webbrowser

        webbrowser.open(board.url)
    return board
