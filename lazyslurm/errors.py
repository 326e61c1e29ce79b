"""Every error lazyslurm raises, in one place.

Each error subclasses the builtin a caller would naturally catch (``ValueError`` for bad
options, ``TimeoutError`` for a Slurm TIMEOUT, ...) as well as :class:`LazySlurmError`.

A task that fails on a worker is re-raised on the client with its *original* type: see
:func:`remote_error`, which builds (once per type) a subclass of both the original
exception type and :class:`TaskError`, so ``except ValueError`` still catches a remote
``ValueError`` and ``except TaskError`` catches every task failure.

This module imports nothing from the package: the runner imports it on every compute node.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "BackendError",
    "BudgetExceededError",
    "CallbackWarning",
    "ClusterConfigError",
    "CorruptResultError",
    "CorruptRunError",
    "DaskCollectionError",
    "DependencyNeverSatisfiedError",
    "DynamicBudgetError",
    "DynamicExpansionError",
    "DynamicLimitError",
    "ElementCancelledError",
    "ElementCrashedError",
    "ElementFailedError",
    "ElementNeverStartsError",
    "ElementOutOfMemoryError",
    "ElementTimeoutError",
    "GraphvizNotFoundError",
    "HiddenLazyValueError",
    "ImplicitLocalWarning",
    "InvalidArgumentError",
    "InvalidNoutError",
    "InvalidOptionError",
    "JobCancelledError",
    "JobFailedError",
    "JobOutOfMemoryError",
    "JobTimeoutError",
    "LazySlurmError",
    "LazyValueError",
    "MapOverMappingError",
    "NoSlurmError",
    "NodeFailError",
    "NotSubmittedError",
    "OptionTypeError",
    "PackagingError",
    "PythonVersionError",
    "RegistryError",
    "ResourceLimitError",
    "RunDirectoryGoneError",
    "RunInterrupted",
    "SSHAuthenticationError",
    "SSHConnectionError",
    "SSHHostKeyError",
    "SerializationError",
    "SubmissionError",
    "TaskArgumentsError",
    "TaskCancelledError",
    "TaskError",
    "UnexpectedKeywordError",
    "UnknownLengthError",
    "UnshippableModuleError",
    "UntrustedStoreError",
    "WaitTimeoutError",
    "missing_module_fixes",
    "remote_error",
]


class LazySlurmError(Exception):
    """Base class of every lazyslurm error.

    ``cancelled``: on the failure a run raises (``compute``, ``Run.result``), the tasks of
    the run that never ran because of it, a :class:`TaskCancelledError` each (empty on
    every other error)."""

    cancelled: tuple[TaskCancelledError, ...] = ()


# --------------------------------------------------------------------------- building graphs


class InvalidOptionError(LazySlurmError, ValueError):
    """A task or cluster option has a value of the right type but a bad form."""


class OptionTypeError(LazySlurmError, TypeError):
    """A task or cluster option has a value of the wrong type."""


class InvalidNoutError(OptionTypeError, ValueError):
    """``nout`` is not a non-negative int (``True``, ``-1``, ``"2"``). A ``ValueError``
    as in dask, and an :class:`OptionTypeError` (a ``TypeError``) as lazyslurm's other
    option errors."""


class UnknownLengthError(LazySlurmError, TypeError):
    """Iterating, mapping over or taking ``len()`` of a lazy value of unknown length."""


class InvalidArgumentError(LazySlurmError, ValueError):
    """A task argument cannot be used: an open file (pass its path), or a container that
    contains itself."""


class MapOverMappingError(LazySlurmError, TypeError):
    """``task.map(a_dict)``: a mapping would be mapped over its keys, which is rarely meant.
    Pass ``.items()``, ``.values()`` or a list of dicts (one call's keywords each)."""


class SerializationError(LazySlurmError, TypeError):
    """A function or argument cannot be pickled for shipping to a worker."""


class CallbackWarning(LazySlurmError, UserWarning):
    """A callback declares hooks lazyslurm cannot honour (named in the message); issued
    when the callback is registered (``Cluster(callbacks=...)``, ``compute(callbacks=...)``).
    """


class HiddenLazyValueError(SerializationError):
    """A Job is hidden inside an object lazyslurm cannot look into (it would not be a
    dependency): pass it directly, or in a list, tuple, dict value, set, namedtuple or
    dataclass."""


class LazyValueError(LazySlurmError, TypeError):
    """A lazy value is used where its value is needed now: in ``if``, ``==``, ``print``,
    as a dict key, ... Get it with ``.get_result()`` or pass it to a task."""


class TaskArgumentsError(LazySlurmError, TypeError):
    """A task was called (or mapped) with arguments its function cannot take: too many
    positional ones, a required one missing, or one given twice. Raised when the job is
    built, never on the node."""


class UnexpectedKeywordError(TaskArgumentsError):
    """A task was called with a keyword argument its function does not accept."""


class DaskCollectionError(LazySlurmError, TypeError):
    """A dask collection was given to lazyslurm, which cannot run dask graphs."""


class ClusterConfigError(LazySlurmError, ValueError):
    """A cluster profile or cluster option is invalid."""


class BudgetExceededError(LazySlurmError, ValueError):
    """A graph's worst case exceeds ``max_core_hours``; nothing was submitted.

    Attributes: ``worst_core_hours`` (None: unbounded) and ``max_core_hours``.
    """

    def __init__(
        self, msg: str, *, worst_core_hours: float | None = None, max_core_hours: float = 0.0
    ) -> None:
        super().__init__(msg)
        self.worst_core_hours = worst_core_hours
        self.max_core_hours = max_core_hours


class ImplicitLocalWarning(LazySlurmError, UserWarning):
    """Tasks that ask for Slurm resources (partition, gpus, account...) ran on the embedded
    local cluster because no cluster was given or active (a forgotten ``with cluster:``)."""


# --------------------------------------------------------------------------- talking to Slurm


class BackendError(LazySlurmError, RuntimeError):
    """A backend command (sbatch, squeue, ssh, ...) failed for reasons other than the task."""


class NoSlurmError(BackendError):
    """No usable Slurm where the cluster's commands run: ``scontrol`` is not on the PATH,
    Slurm is not configured there, or its controller (slurmctld) cannot be reached. The
    message says which, and what to use instead (``Cluster("ssh", ...)``,
    ``Cluster("local")``)."""


class SubmissionError(BackendError):
    """Slurm refused part of a DAG; nothing of the run was left in the queue."""


class ResourceLimitError(SubmissionError, ValueError):
    """A task asks for more than the cluster can ever give (memory or CPUs over the
    partition's largest node, time over its MaxTime): refused before anything is submitted.

    Attributes: ``option`` (``mem``, ``cpus_per_task``, ``time``), ``value``, ``limit``.
    """

    def __init__(self, msg: str, *, option: str = "", value: str = "", limit: str = "") -> None:
        super().__init__(msg)
        self.option = option
        self.value = value
        self.limit = limit


class RunDirectoryGoneError(BackendError):
    """The run directory disappeared while the run was being watched (deleted by hand, a
    cleaner, or a scratch purge): its results can no longer be read."""


class SSHConnectionError(BackendError, ConnectionError):
    """An SSH connection to the cluster (or to a jump host on the way) could not be made:
    refused, timed out, host name not found, authentication failed, host key unknown or
    changed. Also a builtin :class:`ConnectionError` (an ``OSError``), so
    ``except ConnectionError`` catches it; ``except BackendError`` still does.

    The message names the profile (if the cluster came from one), the host as written and
    as resolved (``HostName:port``), the jump hosts, and the cause in one line.
    Attributes: ``host`` (as written), ``address`` (``HostName:port`` of the target),
    ``jumps`` (``HostName:port`` of each jump host, in order), ``profile`` (or ``""``),
    ``failed_at`` (``HostName:port`` of the host the connection failed at), ``reason``.
    """

    def __init__(
        self,
        msg: str,
        *,
        host: str = "",
        address: str = "",
        jumps: tuple[str, ...] = (),
        profile: str = "",
        failed_at: str = "",
        reason: str = "",
    ) -> None:
        super().__init__(msg)
        self.host = host
        self.address = address
        self.jumps = tuple(jumps)
        self.profile = profile
        self.failed_at = failed_at
        self.reason = reason

    def __str__(self) -> str:  # the message, never OSError's "[Errno ...]" form
        return str(self.args[0]) if self.args else ""


class SSHAuthenticationError(SSHConnectionError):
    """The SSH server (the cluster's login node or a jump host) refused every key tried, or
    refused the answer to its second-factor prompt (a wrong or expired code), or there was
    no one to ask it (docs/two-factor.md)."""


class SSHHostKeyError(SSHConnectionError):
    """The SSH server's host key (the login node's or a jump host's) is unknown or does not
    match ``known_hosts``. Never retried: a poll raises it at once."""


# --------------------------------------------------------------------------- the store


class DynamicExpansionError(LazySlurmError, RuntimeError):
    """A task returned a lazy value and its subgraph could not be planned or submitted
    from where the task ran (docs/dynamic.md). ``error_record`` is set when the subgraph
    failed inline: the dynamic node then fails with that original error."""

    def __init__(self, message: str, *, error_record: bytes | None = None) -> None:
        super().__init__(message)
        self.error_record = error_record


class DynamicLimitError(DynamicExpansionError):
    """A dynamic expansion would nest deeper, or add more tasks to its run, than the
    run's limits allow (``Cluster(dynamic_max_depth=..., dynamic_max_tasks=...)``)."""


class DynamicBudgetError(DynamicLimitError, BudgetExceededError):
    """A dynamic expansion's worst case, added to what its run already committed (the
    run's plan and earlier expansions), may exceed the run's ``max_core_hours``: nothing
    of the subgraph was submitted. Attributes as :class:`BudgetExceededError`
    (``worst_core_hours``: the run's total with this subgraph; None: unbounded)."""

    def __init__(
        self, msg: str, *, worst_core_hours: float | None = None, max_core_hours: float = 0.0
    ) -> None:
        BudgetExceededError.__init__(
            self, msg, worst_core_hours=worst_core_hours, max_core_hours=max_core_hours
        )
        self.error_record = None


class UntrustedStoreError(LazySlurmError, PermissionError):
    """A directory or file of the store is not private to this user (another owner,
    group- or world-writable, or a symlink): lazyslurm refuses to use it.
    ``path`` names it."""

    def __init__(self, msg: str, *, path: str = "") -> None:
        super().__init__(msg)
        self.path = path


class CorruptResultError(LazySlurmError, ValueError):
    """A result or error record failed verification (header, length, checksum, or the
    key and element that wrote it): it is never unpickled. ``key`` and ``path`` name it."""

    def __init__(self, msg: str, *, key: str = "", path: str = "") -> None:
        super().__init__(msg)
        self.key = key
        self.path = path


class CorruptRunError(LazySlurmError, ValueError):
    """A file that describes a run (its ``manifest.json``, ``outputs.pkl``) is truncated
    or damaged: the run cannot be re-attached. ``run`` and ``path`` name it."""

    def __init__(self, msg: str, *, run: str = "", path: str = "") -> None:
        super().__init__(msg)
        self.run = run
        self.path = path


# --------------------------------------------------------------------------- packaging


class PythonVersionError(ClusterConfigError):
    """The cluster's Python cannot run what this client pickled (or cannot run the runner)."""


class UnshippableModuleError(SerializationError):
    """Task code needs a module the packaging mode cannot ship and the cluster lacks."""


def missing_module_fixes(it: str = "it") -> str:
    """What makes a module the cluster lacks importable there: the one wording of the
    check before submission (``packaging/byvalue.py``) and of a task that failed to
    import it on the node (:func:`remote_error`). ``it``: the module(s), as a pronoun.

    >>> missing_module_fixes("them")[:60]
    "packaging='wheel' (declare them as dependencies of your proj"
    """
    dependency = "a dependency" if it == "it" else "dependencies"
    return (
        f"packaging='wheel' (declare {it} as {dependency} of your project), "
        f"packaging='container' (an image that has {it}), or install {it} on the cluster "
        f"and use packaging='inherit' (with python=... / setup=[...])"
    )


class PackagingError(LazySlurmError, RuntimeError):
    """Building, pushing or staging the code or environment of a run failed."""


class RegistryError(PackagingError, ConnectionError):
    """The container registry cannot be reached."""


# --------------------------------------------------------------------------- task outcomes


class NotSubmittedError(LazySlurmError, RuntimeError):
    """A job handle asked for something only a submitted job has (its output, script)."""


class WaitTimeoutError(LazySlurmError, TimeoutError):
    """``wait(timeout=...)`` ran out of time; the jobs keep running."""


class TaskError(LazySlurmError):
    """A task raised on a worker.

    Instances raised by ``compute`` are also instances of the original exception type.
    Attributes: ``task`` (task name), ``key`` (node key), ``remote_traceback`` (text).
    """

    task: str = ""
    key: str = ""
    remote_traceback: str = ""


class ElementFailedError(LazySlurmError, RuntimeError):
    """An element (one index of an array job) ended badly without a Python exception from
    the task: Slurm ended it (TIMEOUT, OUT_OF_MEMORY, ...) or it left no result.

    Attributes: ``job_id``, ``array_index``, ``state``, ``exit_code``, ``stderr_tail``, ``key``.
    """

    def __init__(
        self,
        msg: str,
        *,
        job_id: str = "",
        array_index: int | None = None,
        state: str = "",
        exit_code: str = "",
        stderr_tail: str = "",
        key: str = "",
    ) -> None:
        super().__init__(msg)
        self.job_id = job_id
        self.array_index = array_index
        self.state = state
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.key = key


class ElementTimeoutError(ElementFailedError, TimeoutError):
    """The element ran over its ``time`` limit (Slurm state TIMEOUT or DEADLINE)."""


class ElementOutOfMemoryError(ElementFailedError, MemoryError):
    """The element ran over its ``mem`` limit (Slurm state OUT_OF_MEMORY)."""


class NodeFailError(ElementFailedError):
    """The node running the element failed (NODE_FAIL, BOOT_FAIL) or it was preempted."""


class ElementNeverStartsError(ElementFailedError):
    """Slurm keeps the element pending for a reason that can never clear (BadConstraints,
    PartitionConfig, InvalidAccount, ...): it is reported as a failure, with the reason
    and what to change, instead of being waited on forever."""


class ElementCrashedError(ElementFailedError):
    """The process running the element ended without leaving its outcome: a segfault, a
    signal, or ``os._exit()`` from the task. Written by the runner of a packed Slurm
    element, whose other elements keep their results (the element fails alone); the
    message says how the process ended, ``stderr_tail`` shows the element's part of the
    pack's log. An :class:`ElementFailedError`: the task raised no Python exception."""


class ElementCancelledError(ElementFailedError):
    """The element was cancelled by a user or an administrator (scancel)."""


class DependencyNeverSatisfiedError(ElementFailedError):
    """Slurm will never start the element: a dependency failed."""


# the names these errors had before "element" became the one word for an index of an
# array job; kept so that code written against them still catches the same errors
JobFailedError = ElementFailedError
JobTimeoutError = ElementTimeoutError
JobOutOfMemoryError = ElementOutOfMemoryError
JobCancelledError = ElementCancelledError


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C while waiting for a run: the run was cancelled. Its message is one line
    saying what was cancelled, how many elements, and how to inspect the run.

    A ``KeyboardInterrupt`` (not a :class:`LazySlurmError`, which is an ``Exception``), so
    ``except Exception`` never swallows a Ctrl-C. Uncaught, it prints that one line
    instead of a traceback (IPython too), and the program then dies by SIGINT, as on a
    plain Ctrl-C: its exit status is 130, so a shell loop or ``make`` stops.
    """

    def __init__(self, message: str = "", run_id: str = "", cancelled: int = 0) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.cancelled = cancelled

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.run_id, self.cancelled))

    def _render_traceback_(self) -> list[str]:
        """IPython and Jupyter show this instead of a traceback: the one line."""
        return [str(self)]


class TaskCancelledError(LazySlurmError, RuntimeError):
    """A task never ran because a task it depends on failed.

    ``cause_key`` names the failed node that caused it.
    """

    def __init__(self, msg: str, *, key: str = "", cause_key: str = "") -> None:
        super().__init__(msg)
        self.key = key
        self.cause_key = cause_key


def _message_str(self: BaseException) -> str:
    return str(self.args[0]) if self.args else ""


@functools.cache
def _remote_type(original: type[BaseException]) -> type[TaskError]:
    """The subclass of ``original`` and :class:`TaskError` used to re-raise remote errors."""
    if issubclass(original, TaskError):
        return original
    try:
        return type(
            f"Remote{original.__name__}",
            (original, TaskError),
            {
                "__module__": __name__,
                "__qualname__": f"Remote{original.__name__}",
                # the original type's __str__ may read fields we never set (UnicodeError)
                # or quote its argument (KeyError): always show our message as is
                "__str__": _message_str,
            },
        )
    except TypeError:  # final types or incompatible instance layouts
        return TaskError


def remote_error(
    original: BaseException | None,
    *,
    type_name: str,
    message: str,
    task: str,
    key: str,
    remote_traceback: str,
) -> TaskError:
    """Build the exception that re-raises a task's failure on the client.

    ``original`` is the unpickled exception, or ``None`` when it could not be pickled or
    unpickled on the client (then a plain :class:`TaskError` carries its type name).

    >>> err = remote_error(ValueError("bad"), type_name="ValueError", message="bad",
    ...                    task="f", key="f-1", remote_traceback="Traceback ...")
    >>> isinstance(err, ValueError) and isinstance(err, TaskError)
    True
    """
    cls = _remote_type(type(original)) if isinstance(original, Exception) else TaskError
    if isinstance(original, ModuleNotFoundError) and _installed_here(original.name):
        message = (
            f"{message} (module {original.name!r} is installed here, on the client, but not "
            f"where the task ran: {missing_module_fixes()})"
        )
    if isinstance(original, ElementFailedError):  # its process died (ElementCrashedError)
        text = f"task {task!r} (key {key}) {message}\n--- stderr tail ---\n{remote_traceback}"
    else:
        text = (
            f"task {task!r} (key {key}) raised {type_name}: {message}\n"
            f"--- remote traceback ---\n{remote_traceback.rstrip()}"
        )
    err = cls.__new__(cls)
    if original is not None:
        err.__dict__.update(getattr(original, "__dict__", {}))
        if isinstance(original, OSError) and isinstance(err, OSError):  # C-level fields
            err.errno, err.strerror = original.errno, original.strerror
            err.filename, err.filename2 = original.filename, original.filename2
        if isinstance(original, ImportError) and isinstance(err, ImportError):
            err.name, err.path = original.name, original.path  # C-level fields too
    Exception.__init__(err, text)
    err.task = task
    err.key = key
    err.remote_traceback = remote_traceback
    return err


def _installed_here(module: str | None) -> bool:
    """Whether ``module`` (its top-level package) can be imported by this process."""
    if not module:
        return False
    import importlib.util

    try:
        return importlib.util.find_spec(module.partition(".")[0]) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- pictures


class GraphvizNotFoundError(LazySlurmError, RuntimeError):
    """Rendering a picture needs graphviz's ``dot`` program, which is not on ``PATH``.

    The message always says how to install it; ``context`` (what was being rendered) is
    put in front.
    """

    def __init__(self, context: str = "") -> None:
        hint = (
            "graphviz's `dot` program was not found on PATH; it is needed to render "
            "pictures (the DOT text is still available as `.source`). Install it with "
            "`apt-get install graphviz`, `conda install graphviz` or `brew install graphviz`"
        )
        super().__init__(f"{context}: {hint}" if context else hint)
        self.context = context

    def __reduce__(self) -> tuple[type[GraphvizNotFoundError], tuple[str]]:
        return (type(self), (self.context,))
