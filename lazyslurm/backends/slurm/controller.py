"""A busy Slurm controller: which failures pass, how to wait before trying again, how
often a client may ask, and how a run's calls are counted. Pure (time and randomness are
arguments), used by the client (:mod:`~lazyslurm.backends.slurm.backend`) and the
compute-node side (:mod:`~lazyslurm.backends.slurm.node`).

- :func:`transient`: Slurm's words for a controller that is slow, restarting or away
  (recorded on the test site, docs/reliability.md): worth trying again.
- :class:`Backoff`: exponential waits with jitter, up to a deadline
  (``unreachable_timeout_s``).
- :class:`TokenBucket`: ``max_rpc_per_min`` calls a minute on average, ``rpc_burst`` at
  once. A needed call (submit, cancel) takes its tokens at once, into debt if need be;
  optional ones (the status query of a poll) wait for theirs.
- Counting: every Slurm command made for a run is counted by kind (``sbatch``,
  ``squeue``, ``sacct``, ``scontrol``, ``scancel``, ``srun``) in the run's ``calls``
  file (:attr:`~lazyslurm.store.RunLayout.calls`), by whoever made it: the client's
  scripts append their own (:func:`count_script`), the compute nodes theirs
  (:func:`lazyslurm.store.record_calls`).

>>> transient("sbatch: error: Batch job submission failed: Socket timed out on send/recv "
...           "operation"), transient("sbatch: error: invalid partition specified: x")
(True, False)
"""

from __future__ import annotations

import random
import shlex
import time
from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "CALLS_MARK",
    "CALLS_TOTAL_MARK",
    "KINDS",
    "TRANSIENT_ERRORS",
    "Backoff",
    "TokenBucket",
    "add_calls",
    "calls_text",
    "count_script",
    "parse_calls",
    "summed",
    "total_script",
    "transient",
]

# Slurm's messages for a controller (or slurmdbd) that did not answer, measured on the
# test site (Slurm 22.05.8) with slurmctld stopped (SIGSTOP: "Socket timed out", after
# MessageTimeout) and gone (SIGTERM: "Unable to contact slurm controller", after ~9 s of the
# client's own retries); scontrol release/update then say "Unexpected message received"
TRANSIENT_ERRORS = (
    "socket timed out on send/recv operation",
    "unable to contact slurm controller",
    "unexpected message received",
    "zero bytes were transmitted or received",
    "connection refused",
    "connection reset by peer",
    "transport endpoint is not connected",
    "communication connection failure",
    "slurm temporarily unable to accept job",
    "resource temporarily unavailable",
    "rate limit",  # slurmctld's RPC rate limiter (23.02 and later)
    "backup controller in standby mode",
    "problem talking to the database",  # sacct while slurmdbd is away
    "lz-transient",  # our own scripts' word for one of the above (e.g. squeue failed)
)

KINDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "srun")
CALLS_MARK = "LZ-CALLS"  # a script's own calls, on its stdout: "LZ-CALLS squeue 1 scancel 1"
CALLS_TOTAL_MARK = "LZ-CALLS-TOTAL"  # the run's calls file, summed


def transient(text: str) -> bool:
    """Whether Slurm's output says the controller did not answer (worth a later try)."""
    low = text.lower()
    return any(words in low for words in TRANSIENT_ERRORS)


class Backoff:
    """Waits before each new try: ``base_s * 2**n``, at most ``cap_s``, each times a
    random factor in [0.5, 1.5) (jitter: clients that failed together do not come back
    together), never past ``timeout_s`` from now.

    >>> b = Backoff(4, base_s=1, cap_s=4, rng=lambda: 0.5, clock=iter(range(100)).__next__)
    >>> [b.next_wait() for _ in range(4)]   # the clock ticks 1 s a call; the deadline is 4
    [1.0, 2.0, 1.0, None]
    """

    def __init__(
        self,
        timeout_s: float,
        *,
        base_s: float = 1.0,
        cap_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self.started = clock()
        self.deadline = self.started + timeout_s
        self._base, self._cap, self._rng = base_s, cap_s, rng
        self.tries = 0

    def next_wait(self) -> float | None:
        """Seconds to wait before the next try; None when the deadline has passed."""
        left = self.deadline - self._clock()
        if left <= 0:
            return None
        wait = min(self._base * 2**self.tries, self._cap) * (0.5 + self._rng())
        self.tries += 1
        return float(min(wait, left))

    def sleep(self) -> bool:
        """Wait before the next try (False, without waiting, once the deadline passed)."""
        wait = self.next_wait()
        if wait is None:
            return False
        time.sleep(wait)
        return True

    def elapsed(self) -> float:
        return self._clock() - self.started


class TokenBucket:
    """``per_min`` calls a minute on average and ``burst`` at once (a bucket that holds
    ``burst`` tokens, refilled continuously at ``per_min`` a minute, full at start).

    :meth:`take` never waits (a needed call: the bucket may go into debt, which later
    optional calls repay); :meth:`try_take` takes only what is there.

    >>> now = [0.0]
    >>> b = TokenBucket(4, 2, clock=lambda: now[0])     # 4 a minute, 2 at once
    >>> b.try_take(), b.try_take(), b.try_take()
    (True, True, False)
    >>> now[0] = 15.0                                     # one token back every 15 s
    >>> b.try_take(), b.wait_s()
    (True, 15.0)
    >>> b.take(3); round(b.wait_s(), 6)                  # a submission of 3: debt, repaid first
    60.0
    """

    def __init__(
        self,
        per_min: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_min <= 0:
            msg = f"per_min must be positive, got {per_min!r}"
            raise ValueError(msg)
        self.rate = per_min / 60.0  # tokens a second
        self.burst = float(burst if burst is not None else max(1.0, per_min))
        self._clock = clock
        self.tokens = self.burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self, n: float = 1) -> None:
        """Spend ``n`` tokens now, into debt if need be (never waits)."""
        self._refill()
        self.tokens -= n

    def try_take(self, n: float = 1) -> bool:
        """Spend ``n`` tokens if the bucket holds them."""
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def give_back(self, n: float = 1) -> None:
        """Return tokens taken for a call that was not made."""
        self._refill()
        self.tokens = min(self.burst, self.tokens + n)

    def wait_s(self, n: float = 1) -> float:
        """Seconds until the bucket holds ``n`` tokens (0: now)."""
        self._refill()
        return max(0.0, (n - self.tokens) / self.rate)


# --------------------------------------------------------------------------- counting


def calls_text(counts: Mapping[str, int]) -> str:
    """``sbatch 3 scontrol 1``: the non-zero counts, kinds in :data:`KINDS` order first.

    >>> calls_text({"scontrol": 1, "sbatch": 3, "squeue": 0})
    'sbatch 3 scontrol 1'
    """
    order = [k for k in KINDS if k in counts] + sorted(k for k in counts if k not in KINDS)
    return " ".join(f"{k} {counts[k]}" for k in order if counts[k])


def parse_calls(text: str, mark: str | None = None) -> dict[str, int]:
    """Sum the ``KIND N`` pairs of ``text``'s lines (only lines starting with ``mark``,
    which is dropped, when given). Bad pairs and zero counts are skipped.

    >>> parse_calls("sbatch 2 scontrol 1 scancel 0\\nsqueue 1\\nsqueue 1\\nnoise\\n")
    {'sbatch': 2, 'scontrol': 1, 'squeue': 2}
    >>> parse_calls("x\\nLZ-CALLS squeue 1\\nLZ-CALLS-TOTAL sbatch 9\\n", CALLS_MARK)
    {'squeue': 1}
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        words = line.split()
        if mark is not None:
            if not words or words[0] != mark:
                continue
            words = words[1:]
        for kind, n in zip(words[::2], words[1::2], strict=False):
            if n.isdigit() and int(n) and kind.isidentifier():
                out[kind] = out.get(kind, 0) + int(n)
    return out


def add_calls(into: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    for kind, n in more.items():
        into[kind] = into.get(kind, 0) + n
    return into


def count_script(calls_file: str | None, counts: Mapping[str, int] | str) -> str:
    r"""Shell that says the calls a script just made: an ``LZ-CALLS`` line on stdout (the
    client reads it) and the same pairs appended to ``calls_file`` (the run's record; none
    when None). ``counts`` may also be shell text (``"sbatch $n"``), expanded there.

    >>> print(count_script("/w/runs/r/calls", {"squeue": 1}))
    echo "LZ-CALLS squeue 1"; echo "squeue 1" >> /w/runs/r/calls 2>/dev/null
    """
    text = counts if isinstance(counts, str) else calls_text(counts)
    line = f'echo "{CALLS_MARK} {text}"'
    if calls_file is None:
        return line
    return f'{line}; echo "{text}" >> {shlex.quote(calls_file)} 2>/dev/null'


def total_script(calls_file: str) -> str:
    """Shell printing the run's calls file summed, after :data:`CALLS_TOTAL_MARK`."""
    return (
        f"echo {CALLS_TOTAL_MARK} $(awk '{{for (i = 1; i < NF; i += 2) n[$i] += $(i + 1)}} "
        f'END {{for (k in n) printf "%s %d ", k, n[k]}}\' {shlex.quote(calls_file)} 2>/dev/null)'
    )


def summed(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The sum of several counts."""
    out: dict[str, int] = {}
    for part in parts:
        add_calls(out, part)
    return out
