"""Error types and remote re-raising (lazyslurm.errors)."""

from __future__ import annotations

import pytest

from lazyslurm import errors
from lazyslurm.errors import (
    ElementFailedError,
    ElementOutOfMemoryError,
    ElementTimeoutError,
    InvalidOptionError,
    LazySlurmError,
    OptionTypeError,
    SerializationError,
    TaskCancelledError,
    TaskError,
    UnknownLengthError,
    remote_error,
)

TB = 'Traceback (most recent call last):\n  File "w.py", line 3, in work\nValueError: bad\n'


def make(original: BaseException | None, type_name: str = "ValueError") -> TaskError:
    return remote_error(
        original,
        type_name=type_name,
        message=str(original),
        task="work",
        key="work-abc123",
        remote_traceback=TB,
    )


def test_all_is_sorted_and_every_error_is_a_lazyslurm_error() -> None:
    """errors.__all__ is sorted; every exported class subclasses LazySlurmError."""
    assert errors.__all__ == sorted(errors.__all__)
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and name != "RunInterrupted":
            assert issubclass(obj, LazySlurmError), name
    # a Ctrl-C must not be caught by `except Exception`
    assert issubclass(errors.RunInterrupted, KeyboardInterrupt)
    assert not issubclass(errors.RunInterrupted, Exception)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InvalidOptionError, ValueError),
        (OptionTypeError, TypeError),
        (UnknownLengthError, TypeError),
        (SerializationError, TypeError),
        (errors.ClusterConfigError, ValueError),
        (errors.BudgetExceededError, ValueError),
        (errors.BackendError, RuntimeError),
        (errors.SubmissionError, RuntimeError),
        (errors.SSHHostKeyError, RuntimeError),
        (errors.SSHHostKeyError, ConnectionError),
        (errors.SSHConnectionError, ConnectionError),
        (errors.SSHConnectionError, errors.BackendError),
        (errors.SSHAuthenticationError, errors.SSHConnectionError),
        (errors.SSHHostKeyError, errors.SSHConnectionError),
        (ElementFailedError, RuntimeError),
        (ElementTimeoutError, TimeoutError),
        (ElementOutOfMemoryError, MemoryError),
        (errors.NodeFailError, ElementFailedError),
        (errors.ElementCancelledError, ElementFailedError),
        (errors.DependencyNeverSatisfiedError, ElementFailedError),
        (TaskCancelledError, RuntimeError),
        (errors.CallbackWarning, UserWarning),
    ],
)
def test_errors_subclass_the_builtin_a_caller_would_catch(
    cls: type[Exception], builtin: type[Exception]
) -> None:
    """Each error is catchable as the natural builtin."""
    assert issubclass(cls, builtin) and issubclass(cls, LazySlurmError)


def test_ssh_connection_error_pickles_and_prints_its_message() -> None:
    """An SSHConnectionError (an OSError too) keeps its message and fields through pickle,
    and prints as its message (no "[Errno ...]")."""
    import pickle

    err = errors.SSHHostKeyError("no", host="hpc", address="h:22", jumps=("j:22",), profile="p")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == "no" and (back.host, back.jumps, back.profile) == ("hpc", ("j:22",), "p")
    assert type(back) is errors.SSHHostKeyError and back.errno is None


def test_remote_error_keeps_the_original_type() -> None:
    """remote_error builds an instance of both the original type and TaskError."""
    err = make(ValueError("bad"))
    assert isinstance(err, ValueError) and isinstance(err, TaskError)
    assert type(err).__name__ == "RemoteValueError"
    with pytest.raises(ValueError, match="bad"):
        raise err


def test_remote_error_message_carries_task_key_and_traceback() -> None:
    """The message names the task, the node key, the type and holds the remote traceback."""
    err = make(ValueError("bad"))
    text = str(err)
    assert "'work'" in text and "work-abc123" in text and "ValueError: bad" in text
    assert "remote traceback" in text and 'File "w.py", line 3' in text
    assert (err.task, err.key, err.remote_traceback) == ("work", "work-abc123", TB)


def test_remote_types_are_cached_per_original_type() -> None:
    """Two remote ValueErrors share one class; a TaskError subclass is used as is."""
    assert type(make(ValueError("a"))) is type(make(ValueError("b")))
    assert type(make(KeyError("a"))) is not type(make(ValueError("a")))

    class Mine(TaskError):
        pass

    assert type(make(Mine("x"), "Mine")) is Mine


def test_remote_key_error_message_is_not_quoted() -> None:
    """str() of a remote KeyError is the message itself, not its repr."""
    err = make(KeyError("missing"), "KeyError")
    assert isinstance(err, KeyError)
    assert str(err).startswith("task 'work' (key work-abc123) raised KeyError")


def test_remote_error_keeps_the_originals_attributes() -> None:
    """Attributes a custom exception sets survive on the remote error."""

    class Custom(Exception):
        def __init__(self, msg: str, code: int) -> None:
            super().__init__(msg)
            self.code = code

    err = make(Custom("boom", 7), "Custom")
    assert isinstance(err, Custom) and isinstance(err, TaskError) and err.code == 7


@pytest.mark.parametrize(
    "original",
    [UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), OSError(2, "gone")],
)
def test_remote_error_of_builtin_types_with_special_layouts(original: Exception) -> None:
    """Types with their own fields and __str__ still give a readable remote error."""
    err = make(original, type(original).__name__)
    assert isinstance(err, type(original)) and isinstance(err, TaskError)
    assert str(err).startswith("task 'work'")


def test_remote_error_without_original_is_a_plain_task_error() -> None:
    """When the exception could not be unpickled, a TaskError carries its type name."""
    err = make(None, "weird.ModuleError")
    assert type(err) is TaskError
    assert "weird.ModuleError" in str(err) and err.key == "work-abc123"


def test_base_exceptions_are_not_subclassed() -> None:
    """A remote KeyboardInterrupt-like BaseException is reported as a TaskError only."""
    err = make(KeyboardInterrupt(), "KeyboardInterrupt")
    assert type(err) is TaskError and not isinstance(err, KeyboardInterrupt)


def test_job_failed_and_cancelled_errors_carry_their_fields() -> None:
    """ElementFailedError and TaskCancelledError keep their keyword fields."""
    e = ElementTimeoutError(
        "late",
        job_id="12",
        array_index=3,
        state="TIMEOUT",
        exit_code="0:15",
        stderr_tail="...",
        key="k",
    )
    assert (e.job_id, e.array_index, e.state, e.exit_code, e.key) == (
        "12",
        3,
        "TIMEOUT",
        "0:15",
        "k",
    )
    c = TaskCancelledError("never ran", key="k2", cause_key="k")
    assert (c.key, c.cause_key, str(c)) == ("k2", "k", "never ran")


def test_remote_os_error_keeps_errno_and_filename() -> None:
    """A remote FileNotFoundError keeps errno, strerror and filename."""
    err = make(FileNotFoundError(2, "No such file or directory", "/data/x"), "FileNotFoundError")
    assert isinstance(err, FileNotFoundError)
    assert (err.errno, err.strerror, err.filename) == (2, "No such file or directory", "/data/x")


def test_old_job_error_names_are_the_element_errors() -> None:
    """The errors of an element keep their earlier Job* names as aliases."""
    assert errors.JobFailedError is errors.ElementFailedError
    assert errors.JobTimeoutError is errors.ElementTimeoutError
    assert errors.JobOutOfMemoryError is errors.ElementOutOfMemoryError
    assert errors.JobCancelledError is errors.ElementCancelledError
