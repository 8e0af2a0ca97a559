"""Paths as users type them: ``~`` where the shell left it unexpanded.

Dependency-free, so that light modules (configs, the command line) can use it without loading
the TIFF readers.
"""

from __future__ import annotations

from pathlib import Path


def home_path(text: str | Path) -> Path:
    """``text`` with a leading ``~`` or ``~/`` as the home folder, where the shell left it (after
    ``--out=``, in a YAML value); ``~name`` stays a name (``~backup`` was /var/backups, and
    ``~res`` a traceback: no user 'res')."""
    text = str(text)
    if text == "~" or text.startswith("~/"):
        try:
            return Path.home() / text[2:]
        except RuntimeError:  # no home folder known: the name as typed
            return Path(text)
    return Path(text)
