"""What ``WORKDIR/code`` holds, and giving its disk back: one shell command each.

``WORKDIR/code`` holds, per content hash, lazyslurm's runtime (``HASH``), pure-Python
packages staged by ``by-value`` (``deps-HASH``), a project's own code (``proj-HASH``)
and environments (``wheels-KEY`` uploaded, ``venv-KEY`` made from them by the first job,
``venv-KEY.lock``), which this module counts as one *unit* (``env-KEY``). A unit's last
use is the newest modification time of its entries: every submission touches the entries
it uses (:func:`use_lines`; atime is unreliable on many file systems), and every run
records them in its directory (``RunLayout.code_uses``).

- :func:`gc_script` removes units unused since a cutoff (``lazyslurm clean --code``), or
  the least recently used ones while the total exceeds a cap (``code_cache_gb``, run
  after a submission that staged something new, in the same round trip). Never a unit a
  run whose jobs are still queued or running uses (one ``squeue`` in the same command;
  when it fails, or such a run did not record its units, nothing is removed). A unit is
  moved away under an exclusive ``flock`` of ``code/.lock`` after checking again that it
  was not used meanwhile; a submission touches and checks the units it uses under a
  shared lock, so a unit is either used (and kept) or gone before the submission (which
  then stages it again).
- :func:`usage_script` lists runs and units with their sizes (``lazyslurm usage --disk``).

Only entries of this user, not writable by others and not symbolic links are counted or
removed; ``code/`` itself must be private.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence

import attrs

from lazyslurm.store import INSIDE, RunLayout

__all__ = [
    "CodeUnit",
    "DiskReport",
    "GcResult",
    "gc_script",
    "kind_of",
    "read_gc",
    "read_usage",
    "unit_of",
    "usage_script",
    "use_lines",
]

MISSING_MARK = "LZ-CODE-MISSING"
_LOCK = ".lock"  # code/.lock: shared by submissions, exclusive for removals
_LOCK_WAIT_S = 60
# a unit younger than this is never removed by the cap (a concurrent client may have
# staged it and not submitted yet)
CAP_GRACE_S = 600
_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$|^\.stage-[A-Za-z0-9_.-]+$"


def unit_of(name: str) -> str:
    """The unit an entry of ``WORKDIR/code`` belongs to: an environment's ``venv-KEY``,
    ``wheels-KEY`` and ``venv-KEY.lock`` are ``env-KEY``; others are themselves.

    >>> unit_of("venv-ab12"), unit_of("wheels-ab12"), unit_of("venv-ab12.lock"), unit_of("x")
    ('env-ab12', 'env-ab12', 'env-ab12', 'x')
    """
    if name.startswith("venv-") and name.endswith(".lock"):
        return "env-" + name[5:-5]
    for prefix in ("venv-", "wheels-"):
        if name.startswith(prefix):
            return "env-" + name[len(prefix) :]
    return name


def kind_of(unit: str) -> str:
    """What a unit is, in words.

    >>> kind_of("env-ab"), kind_of("0123456789abcdef"), kind_of("proj-ab")
    ('environment (venv + wheels)', 'lazyslurm runtime', 'project code')
    """
    if unit.startswith("env-"):
        return "environment (venv + wheels)"
    if unit.startswith("proj-"):
        return "project code"
    if unit.startswith("deps-"):
        return "by-value packages"
    if unit.startswith(".stage-"):
        return "unfinished upload"
    if re.fullmatch(r"[0-9a-f]{16}", unit):
        return "lazyslurm runtime"
    return "other"


def _members(unit: str) -> list[str]:
    if unit.startswith("env-"):
        key = unit[4:]
        return [f"venv-{key}", f"wheels-{key}", f"venv-{key}.lock"]
    return [unit]


def use_lines(code: str, uses: Iterable[str], required: Sequence[Sequence[str]]) -> str:
    r"""Shell run before a submission (same round trip): under a shared lock of
    ``code/.lock``, touch every entry of ``code`` the run uses (its last use), then check
    that each group of ``required`` has one path that exists; if not, print
    ``LZ-CODE-MISSING NAME...`` on stderr and stop before anything is submitted (the
    entries were removed since the probe saw them: the client stages them again).

    >>> print(use_lines("/w/code", ["ab"], [["ab"]]), end="")  # doctest: +ELLIPSIS
    lz_miss=$(cd -- /w/code 2>/dev/null || { echo ab; exit 0; }
    ...
    touch -c -h -- ab 2>/dev/null
    [ -e ab ] || echo ab)
    if [ -n "$lz_miss" ]; then echo LZ-CODE-MISSING $lz_miss >&2; exit 1; fi
    """
    q = shlex.quote
    names = sorted(set(uses))
    if not names and not required:
        return ""
    checks = [
        " || ".join(f"[ -e {q(path)} ]" for path in group)
        + f" || echo {' '.join(q(path) for path in group)}"
        for group in required
        if group
    ]
    listed = " ".join(q(path) for group in required for path in group)
    gone = f"{{ echo {listed}; exit 0; }}" if listed else "exit 0"
    lines = [
        # code/ itself gone: everything required is missing
        f"lz_miss=$(cd -- {q(code)} 2>/dev/null || {gone}",
        f"{{ command -v flock >/dev/null && exec 9>>{_LOCK} && flock -s -w {_LOCK_WAIT_S} 9; }}"
        " 2>/dev/null",
        *([f"touch -c -h -- {' '.join(q(n) for n in names)} 2>/dev/null"] if names else []),
        *checks,
    ]
    return (
        "\n".join(lines)
        + ")\n"
        + (f'if [ -n "$lz_miss" ]; then echo {MISSING_MARK} $lz_miss >&2; exit 1; fi\n')
    )


def read_missing(stderr: str) -> list[str]:
    """The entries :func:`use_lines` found missing (empty if none)."""
    m = re.search(rf"^{MISSING_MARK} (.*)$", stderr, re.MULTILINE)
    return m.group(1).split() if m else []


# the units of code/: UNIT \t NEWEST_MTIME \t SIZE_KB \t MEMBERS, oldest first
_UNITS_AWK = r"""
$1 == "S" { size[$3] = $2; next }
$1 == "E" && $2 ~ /NAME_RE/ {
  n = $2; u = n
  if (n ~ /^venv-.*\.lock$/) u = "env-" substr(n, 6, length(n) - 10)
  else if (n ~ /^venv-/) u = "env-" substr(n, 6)
  else if (n ~ /^wheels-/) u = "env-" substr(n, 8)
  unit[n] = u; t[n] = int($3)
}
END {
  for (n in unit) {
    u = unit[n]; sz[u] += size[n]
    if (!(u in m) || t[n] > m[u]) m[u] = t[n]
    mem[u] = mem[u] " " n
  }
  for (u in m) printf "%s\t%d\t%d\t%s\n", u, m[u], sz[u], substr(mem[u], 2)
}
""".replace("NAME_RE", _NAME.replace("/", "\\/"))


def _units_lines(code: str) -> str:
    """Shell that checks ``code`` is private (else prints ``LZ-UNTRUSTED FACTS`` and
    exits), enters it and sets ``lz_tab`` to its units (see ``_UNITS_AWK``) and
    ``lz_total`` to their size in KB."""
    q = shlex.quote
    return (
        f"lz_code={q(code)}\nlz_me=$(id -u)\nlz_now=$(date +%s)\n"
        'lz_s=$(find "$lz_code" -maxdepth 0 \\( -type l -o ! -user "$lz_me" -o -perm /022 \\) '
        "-printf '%y %U %m' 2>/dev/null)\n"
        'if [ -n "$lz_s" ]; then printf \'LZ-UNTRUSTED\\t%s %s\\n\' "$lz_me" "$lz_s"; exit 0; fi\n'
        'cd -- "$lz_code" 2>/dev/null || { echo LZ-NO-CODE; exit 0; }\n'
        # entries of this user, private, not links (others are never counted or touched)
        'lz_ent=$(find . -mindepth 1 -maxdepth 1 -user "$lz_me" ! -perm /022 ! -type l '
        f"! -name {_LOCK} ! -name '.trash-*' -printf '%f\\t%T@\\n' 2>/dev/null)\n"
        "lz_tab=$( { printf '%s\\n' \"$lz_ent\" | sed '/^$/d; s/^/E\\t/'\n"
        "  printf '%s\\n' \"$lz_ent\" | cut -f1 | sed '/^$/d' | xargs -r -d '\\n' du -sk -- "
        "2>/dev/null | sed 's/^/S\\t/'; } "
        f"| awk -F'\\t' {q(_UNITS_AWK)} | sort -t \"$(printf '\\t')\" -k2,2n -k1,1)\n"
        "lz_total=0\n"
        "while IFS=$'\\t' read -r u t s mem; do [ -n \"$u\" ] && lz_total=$((lz_total + s)); "
        'done <<< "$lz_tab"\n'
        "printf 'LZ-TOTAL\\t%s\\n' \"$lz_total\"\n"
    )


def _live_lines(runs: str, live: str) -> str:
    """Shell that asks the scheduler once which runs still have jobs (``live``) and sets
    ``lz_prot[UNIT]=RUN`` for every unit such a run recorded, ``lz_unrec`` to the live
    runs of this workdir that recorded none, ``lz_livefail`` if the scheduler could not be
    asked (also printed, ``LZ-LIVE-FAILED MESSAGE``)."""
    q = shlex.quote
    uses = q(INSIDE.code_uses)
    return (
        f"lz_runs={q(runs)}\ndeclare -A lz_prot\nlz_unrec=''\nlz_livefail=''\n"
        # no scheduler (an embedded backend): no run has jobs queued anywhere
        f"if lz_out=$( {{ {live or 'true'}\n}} 2>&1); then\n"
        "  while IFS= read -r r; do\n"
        '    [ -n "$r" ] && [ -d "$lz_runs/$r" ] || continue\n'
        f'    f="$lz_runs/$r"/{uses}\n'
        '    if [ -f "$f" ] && [ ! -L "$f" ]; then\n'
        "      while IFS= read -r n; do\n"
        '        case "$n" in\n'
        '          venv-*.lock) n="${n#venv-}"; n="env-${n%.lock}";;\n'
        '          venv-*|wheels-*) n="env-${n#*-}";;\n'
        "        esac\n"
        '        [ -n "$n" ] && lz_prot[$n]=$r\n'
        '      done < "$f"\n'
        '    else lz_unrec="$lz_unrec $r"; fi\n'
        '  done <<< "$lz_out"\n'
        "else\n"
        "  lz_livefail=$(printf '%s' \"$lz_out\" | tr '\\n\\t' '  ' | cut -c1-300)\n"
        "  printf 'LZ-LIVE-FAILED\\t%s\\n' \"${lz_livefail:-(no output)}\"\n"
        "  lz_livefail=${lz_livefail:-failed}\n"
        "fi\n"
    )


def gc_script(
    workdir: str,
    *,
    live: str,
    cutoff: float | None = None,
    cap_kb: int | None = None,
    dry_run: bool = False,
    grace_s: int = CAP_GRACE_S,
) -> str:
    """One command that removes units of ``WORKDIR/code`` (see the module docstring):
    those unused since ``cutoff`` (epoch seconds), or, with ``cap_kb``, the least recently
    used (and unused for ``grace_s``) while the total exceeds it. ``live`` prints the ids
    of runs whose jobs are still queued or running (the backend's ``live_runs_script``),
    asked only when something would be removed. Prints ``LZ-TOTAL KB``, then
    ``LZ-REMOVED UNIT KB MTIME`` and ``LZ-KEPT UNIT WHY DETAIL`` lines (tab-separated).
    ``dry_run`` removes nothing."""
    if (cutoff is None) == (cap_kb is None):
        msg = "gc_script needs one of cutoff and cap_kb"
        raise ValueError(msg)
    code = f"{workdir}/code"
    if cap_kb is not None:
        limit = f"lz_limit=$((lz_now - {int(grace_s)}))\n"
        need = f'[ "$lz_total" -gt {int(cap_kb)} ]'
        stop = f'  [ "$lz_total" -gt {int(cap_kb)} ] || break\n'
    else:
        limit = f"lz_limit={int(cutoff or 0)}\n"
        need = (  # some unit is older than the cutoff
            '[ -n "$(printf \'%s\\n\' "$lz_tab" | awk -F\'\\t\' -v c="$lz_limit" '
            '\'$1 != "" && $2 < c\' | head -1)" ]'
        )
        stop = ""
    act = (
        'printf \'LZ-REMOVED\\t%s\\t%s\\t%s\\n\' "$u" "$s" "$t"\n'
        if dry_run
        # under the exclusive lock: used since (touched by a submission)? then kept;
        # else moved away (a submission after this sees it gone and stages it again)
        else (
            "  lz_mv=$( { command -v flock >/dev/null && exec 9>>"
            f"{_LOCK} && flock -x -w {_LOCK_WAIT_S} 9; }} 2>/dev/null\n"
            "    for n in $mem; do\n"
            '      [ -z "$(find "$n" -maxdepth 0 -newermt "@$lz_limit" 2>/dev/null)" ] '
            "|| { echo young; exit 0; }\n"
            "    done\n"
            '    for n in $mem; do [ -e "$n" ] || [ -L "$n" ] || continue; '
            'mv -T -- "$n" ".trash-$$-$n" || { echo failed; exit 0; }; done\n'
            "    echo moved)\n"
            '  case "$lz_mv" in\n'
            '    moved) printf \'LZ-REMOVED\\t%s\\t%s\\t%s\\n\' "$u" "$s" "$t";;\n'
            "    young) printf 'LZ-KEPT\\t%s\\tyoung\\t\\n' \"$u\"; continue;;\n"
            '    *) printf \'LZ-KEPT\\t%s\\tfailed\\t%s\\n\' "$u" "$lz_mv"; continue;;\n'
            "  esac\n"
        )
    )
    return (
        _units_lines(code)
        + limit
        + f"if {need}; then\n"
        + _live_lines(RunLayout.runs_dir(workdir), live)
        + "while IFS=$'\\t' read -r u t s mem; do\n  [ -n \"$u\" ] || continue\n"
        + stop
        + '  [ "$t" -lt "$lz_limit" ] || continue\n'
        + '  if [ -n "$lz_livefail" ]; then printf \'LZ-KEPT\\t%s\\tunchecked\\t\\n\' "$u"; '
        "continue; fi\n"
        + '  if [ -n "${lz_prot[$u]:-}" ]; then printf \'LZ-KEPT\\t%s\\tlive\\t%s\\n\' "$u" '
        '"${lz_prot[$u]}"; continue; fi\n'
        + '  if [ -n "$lz_unrec" ]; then printf \'LZ-KEPT\\t%s\\tunrecorded\\t%s\\n\' "$u" '
        '"${lz_unrec# }"; continue; fi\n'
        + act
        + "  lz_total=$((lz_total - s))\n"
        + 'done <<< "$lz_tab"\nfi\n'
        # what an earlier removal moved away, and this one's: gone for good, outside the lock
        + ("" if dry_run else "rm -rf -- ./.trash-* 2>/dev/null\n")
        + "exit 0\n"
    )


def usage_script(workdir: str) -> str:
    """One command listing what ``WORKDIR`` holds: ``LZ-RUNS COUNT KB OLDEST NEWEST``, then
    ``LZ-TOTAL KB`` and one ``LZ-UNIT UNIT MTIME KB MEMBERS`` line per unit of
    ``WORKDIR/code`` (tab-separated)."""
    q = shlex.quote
    runs = RunLayout.runs_dir(workdir)
    glob = q(RunLayout.RUN_ID_GLOB)
    return (
        f"( cd -- {q(runs)} 2>/dev/null && "
        f"t=$(find . -mindepth 1 -maxdepth 1 -type d -name {glob} -printf '%T@\\n' | "
        "awk 'NR == 1 || $1 < lo { lo = $1 } NR == 1 || $1 > hi { hi = $1 } "
        'END { printf "%d\\t%d\\t%d", NR, lo, hi }\'); '
        'printf \'LZ-RUNS\\t%s\\t%s\\n\' "$t" "$(du -sk . 2>/dev/null | cut -f1)" )\n'
        + _units_lines(f"{workdir}/code")
        + "printf '%s\\n' \"$lz_tab\" | sed '/^$/d; s/^/LZ-UNIT\\t/'\n"
    )


@attrs.frozen
class CodeUnit:
    """One unit of ``WORKDIR/code``: its name, kind, last use (epoch), size and entries."""

    name: str
    last_used: float
    kb: int
    members: tuple[str, ...]

    @property
    def kind(self) -> str:
        return kind_of(self.name)


@attrs.frozen
class GcResult:
    """What :func:`gc_script` did: ``removed`` units, ``kept`` (unit -> why), the total in
    KB before, ``unchecked`` (why the scheduler could not be asked, else ""), and
    ``untrusted`` (facts about ``code/`` itself when it is not private, else "")."""

    removed: tuple[CodeUnit, ...] = ()
    kept: Mapping[str, str] = attrs.field(factory=dict)
    total_kb: int = 0
    unchecked: str = ""
    untrusted: str = ""


def _kept_reason(why: str, detail: str) -> str:
    if why == "live":
        return f"used by run {detail}, whose jobs are still queued or running"
    if why == "unrecorded":
        return (
            f"run(s) {detail} still have jobs queued or running and did not record which code "
            "they use (submitted by an older lazyslurm): nothing is removed until they end"
        )
    if why == "unchecked":
        return "the scheduler could not be asked which runs still have jobs"
    if why == "young":
        return "used again while it was being removed"
    return f"could not be moved away ({detail or why})"


def read_gc(stdout: str) -> GcResult:
    """Read :func:`gc_script`'s output."""
    removed: list[CodeUnit] = []
    kept: dict[str, str] = {}
    total = 0
    unchecked = untrusted = ""
    for line in stdout.splitlines():
        kind, _, rest = line.partition("\t")
        parts = rest.split("\t")
        if kind == "LZ-REMOVED" and len(parts) >= 3:
            unit = parts[0]
            removed.append(CodeUnit(unit, float(parts[2] or 0), int(parts[1] or 0),
                                    tuple(_members(unit))))  # fmt: skip
        elif kind == "LZ-KEPT":
            unit, why, detail = [*parts, "", ""][:3]
            kept[unit] = _kept_reason(why, detail)
        elif kind == "LZ-TOTAL":
            total = int(rest or 0)
        elif kind == "LZ-LIVE-FAILED":
            unchecked = f"the scheduler could not be asked: {rest.strip() or '(no output)'}"
        elif kind == "LZ-UNTRUSTED":
            untrusted = rest
    return GcResult(tuple(removed), kept, total, unchecked, untrusted)


@attrs.frozen
class DiskReport:
    """What a work directory holds (``lazyslurm usage --disk``)."""

    workdir: str
    runs: int = 0
    runs_kb: int = 0
    oldest_run: float = 0.0
    newest_run: float = 0.0
    units: tuple[CodeUnit, ...] = ()
    untrusted: str = ""
    cap_gb: float = 0.0

    @property
    def code_kb(self) -> int:
        return sum(u.kb for u in self.units)

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """Kind -> (units, KB), largest first."""
        out: dict[str, list[int]] = {}
        for u in self.units:
            c = out.setdefault(u.kind, [0, 0])
            c[0] += 1
            c[1] += u.kb
        return {k: (v[0], v[1]) for k, v in sorted(out.items(), key=lambda kv: -kv[1][1])}

    def __str__(self) -> str:
        now = time.time()
        lines = [f"{self.workdir}: {human_kb(self.runs_kb + self.code_kb)}"]
        when = f", oldest {ago(now - self.oldest_run)} ago" if self.runs else ""
        lines.append(f"  runs/   {self.runs} run(s), {human_kb(self.runs_kb)}{when}")
        cap = f" (code_cache_gb={self.cap_gb:g})" if self.cap_gb else " (no cap)"
        lines.append(f"  code/   {len(self.units)} entr(ies), {human_kb(self.code_kb)}{cap}")
        if self.untrusted:
            lines.append(f"    (not counted: code/ is not private: {self.untrusted})")
        for kind, (n, kb) in self.by_kind().items():
            lines.append(f"    {kind:<28} {n:>3}  {human_kb(kb):>9}")
        if self.units:
            lines.append("  largest entries (last used):")
            for u in sorted(self.units, key=lambda u: -u.kb)[:10]:
                lines.append(
                    f"    {u.name:<24} {human_kb(u.kb):>9}  {ago(now - u.last_used)} ago  {u.kind}"
                )
        lines.append(
            "  give disk back: lazyslurm clean --older-than AGE (runs), "
            "lazyslurm clean --code --older-than AGE (code and environments unused that long)"
        )
        return "\n".join(lines)


def read_usage(workdir: str, stdout: str, cap_gb: float = 0.0) -> DiskReport:
    """Read :func:`usage_script`'s output."""
    runs = runs_kb = 0
    oldest = newest = 0.0
    units: list[CodeUnit] = []
    untrusted = ""
    for line in stdout.splitlines():
        kind, _, rest = line.partition("\t")
        parts = rest.split("\t")
        if kind == "LZ-RUNS" and len(parts) >= 4:
            runs, oldest, newest = int(parts[0] or 0), float(parts[1] or 0), float(parts[2] or 0)
            runs_kb = int(parts[3] or 0)
        elif kind == "LZ-UNIT" and len(parts) >= 4:
            units.append(CodeUnit(parts[0], float(parts[1]), int(parts[2] or 0),
                                  tuple(parts[3].split())))  # fmt: skip
        elif kind == "LZ-UNTRUSTED":
            untrusted = rest
    return DiskReport(workdir, runs, runs_kb, oldest, newest, tuple(units), untrusted, cap_gb)


def human_kb(kb: float) -> str:
    """A size in KB, in words.

    >>> human_kb(512), human_kb(2048), human_kb(3 * 1024 * 1024)
    ('512 KB', '2.0 MB', '3.0 GB')
    """
    if kb < 1024:
        return f"{int(kb)} KB"
    if kb < 1024 * 1024:
        return f"{kb / 1024:.1f} MB"
    return f"{kb / 1024 / 1024:.1f} GB"


def ago(seconds: float) -> str:
    """A duration, short.

    >>> ago(30), ago(600), ago(7200), ago(3 * 86400)
    ('30 s', '10 min', '2.0 h', '3.0 d')
    """
    if seconds < 120:
        return f"{max(0, int(seconds))} s"
    if seconds < 7200 - 1:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
