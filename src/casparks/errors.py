"""User-facing errors.

A :class:`CasparksError` is a mistake the user can fix (a bad file, a missing unit, a typo in a
flag). The CLI prints it as one line and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
import math
from numbers import Real
from pathlib import Path
from typing import Any, Iterator


class CasparksError(Exception):
    """A problem with the user's input: says which file, what is wrong and what to do."""

    def __init__(self, what: str, *, path: str | Path | None = None, fix: str | None = None):
        self.what = what.rstrip(". ")
        self.path = Path(path) if path is not None else None
        self.fix = fix.rstrip(". ") if fix else None
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}: ")
        parts.append(self.what)
        if self.fix:  # after a list of problems, a line of its own
            parts.append(f"\n{self.fix[0].upper()}{self.fix[1:]}" if "\n" in self.what else f"; {self.fix}")
        return "".join(parts)


class Terminated(KeyboardInterrupt):
    """A run stopped by a signal that is not Ctrl-C (a scheduler's SIGTERM at its time limit).

    Handled as Ctrl-C is (a :class:`KeyboardInterrupt`: the run saves its steps and says how to
    resume), but the exit status tells the scheduler which signal it was: 128 + ``signum``.
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(self.signum)  # the args rebuild it (pickling across processes)

    def __str__(self) -> str:
        return f"terminated by signal {self.signum}"


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, a SIGTERM (a scheduler's time limit, ``kill``) raises :class:`Terminated`
    in the main thread, so it is handled as Ctrl-C is: staged outputs removed, finished movies named.
    Python's default for SIGTERM ends the process at once, leaving hidden ``.staged`` files behind.
    Elsewhere than in the main thread nothing is changed (only it may set a signal handler)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's status for a process stopped by a signal: 128 + its number (130 for Ctrl-C)."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else 2)  # 2: SIGINT


#: this many files or more with one and the same problem are one line naming the first few
SAME_PROBLEM_LINES = 4


def raise_together(problems: list[CasparksError], total: int, failing: str, fix: str) -> None:
    """Raise every input's problem at once: the one error as it is, several as one error with a
    line each ("2 of 5 movies cannot be {failing}:"); nothing when ``problems`` is empty. Files
    with one and the same problem share a line (a folder of 200 single frames, an image sequence,
    printed 200 lines), and single 2-D images by the dozen are named as an image sequence."""
    if len(problems) == 1:
        raise problems[0]
    if not problems:
        return
    groups: dict[tuple[str, str | None], list[CasparksError]] = {}
    for exc in problems:
        groups.setdefault((exc.what, exc.fix), []).append(exc)
    lines = []
    for (what, own_fix), group in groups.items():
        if len(group) < SAME_PROBLEM_LINES or any(exc.path is None for exc in group):
            lines += [f"  {exc}" for exc in group]
            continue
        names = ", ".join(exc.path.name for exc in group[:3])
        if what.startswith("is a single 2-D image"):
            size = what[len("is a single 2-D image"):].split(")")[0] + ")" if "(" in what else ""
            what, own_fix = (f"are single 2-D images{size}, not movies: the frames of one movie saved one per "
                             "file?", "open them as an image sequence (Fiji: File > Import > Image Sequence) and "
                             "save it as one T×Y×X stack")
        folders = {exc.path.parent for exc in group}
        where = f" in {folders.pop()}" if len(folders) == 1 else ""
        lines.append(f"  {len(group)} files ({names}, …){where}: {what}"
                     + (f"; {own_fix}" if own_fix else ""))
    raise CasparksError(f"{len(problems)} of {total} movies cannot be {failing}:\n" + "\n".join(lines), fix=fix)


def reject_unknown_keys(known, values, what: str, error: type[CasparksError] = CasparksError) -> None:
    """Raise ``error`` naming the keys of ``values`` that are not in ``known`` (e.g. a dataclass's fields)."""
    import difflib

    unknown = sorted(set(values) - set(known))
    if unknown:
        close = [m for key in unknown for m in difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.75)]
        fix = f"known {what}s: {', '.join(sorted(known))}"
        raise error(f"unknown {what}(s) {', '.join(unknown)}",
                    fix=f"did you mean {', '.join(close)}? ({fix})" if close else fix)


def yaml_error_line(exc: Exception) -> str:
    """Where a YAML file failed to parse, " at line N" (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}" if mark else ""


def is_number(value) -> bool:
    """A finite real number (numpy scalars included), and not a bool: what numeric config fields accept."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
