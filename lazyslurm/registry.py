"""Where lazy values find what runs them: a registration point below every layer.

The graph layer knows nothing above it, yet ``job.compute()`` must reach the executor.
As dask's collections reach their scheduler through a registry, the API layer
(``lazyslurm/__init__.py``) registers a loader here and the graph asks :func:`executor`:
``graph/`` imports nothing above it, not even inside a function. Imports nothing.

>>> class Echo:
...     def compute(self, *exprs, **kw): return exprs
>>> old = swap(lambda: Echo())  # a partial executor, enough for this example
>>> executor().compute(1)
(1,)
>>> _ = swap(old)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Executor", "executor", "register", "swap"]


class Executor(Protocol):
    """What lazy values ask of the layer above them: every name the graph calls through
    :func:`executor` (``lazyslurm.handles`` implements it; tests check that it does)."""

    Submitter: Any  # the class behind cluster.submit(task)

    def compute(self, *exprs: Any, **kwargs: Any) -> tuple[Any, ...]: ...
    def visualize(self, *exprs: Any, **kwargs: Any) -> Any: ...
    def job_logs(self, job: Any, cluster: Any = None) -> tuple[str, str]: ...
    def lazy_html(self, value: Any) -> str: ...
    def plan_html(self, plan: Any) -> str: ...
    def run_html(self, run: Any) -> str: ...
    def status_html(self, status: Any) -> str: ...
    def usage_html(self, usage: Any) -> str: ...
    def dashboard(self, run: Any, *, port: int = 0, open_browser: bool = False) -> Any: ...
    def wait(
        self,
        obj: Any,
        timeout: float | None = None,
        poll_interval: float | None = None,
        *,
        cluster: Any = None,
    ) -> bool: ...
    def get_result(self, obj: Any, timeout: float | None = None, *, cluster: Any = None) -> Any: ...
    def get_status(self, obj: Any, *, cluster: Any = None) -> str: ...
    def is_completed(self, obj: Any, *, cluster: Any = None) -> bool: ...
    def job_id(self, obj: Any) -> str | None: ...
    def cancel(self, obj: Any, *, cluster: Any = None) -> bool: ...
    def get_output(self, obj: Any, stream: str, *, cluster: Any = None) -> Any: ...
    def get_script(self, obj: Any, *, cluster: Any = None) -> str: ...
    def tail(
        self,
        job: Any,
        n: int = 10,
        follow: bool = False,
        poll_interval: float | None = None,
        stream: str = "out",
        *,
        cluster: Any = None,
    ) -> Any: ...


_slot: list[Any] = [None, None]  # [loader, loaded executor]


def register(loader: Callable[[], Executor]) -> None:
    """Make ``loader()`` the executor of lazy values (called once, on first use)."""
    _slot[0], _slot[1] = loader, None


def swap(loader: Callable[[], Executor] | None) -> Callable[[], Executor] | None:
    """Register ``loader`` and return the previous one (for tests and embedders)."""
    old = _slot[0]
    _slot[0], _slot[1] = loader, None
    return old


def executor() -> Executor:
    """The registered executor (loaded on first use)."""
    if _slot[1] is None:
        if _slot[0] is None:
            msg = "no executor is registered for lazy values: import lazyslurm first"
            raise RuntimeError(msg)
        _slot[1] = _slot[0]()
    loaded: Executor = _slot[1]
    return loaded
