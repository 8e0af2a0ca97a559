"""Class codes of the original data set, shared by every module.

The codes are those of the reference data set (Dotti et al. 2024): note that waves are 2 and
puffs are 3. Colours are fixed here so that every view of the tool uses the same ones.
"""

from __future__ import annotations

from typing import Iterable

BACKGROUND = 0
SPARK = 1
WAVE = 2
PUFF = 3
IGNORE = 4

#: Event classes in code order.
EVENT_CLASSES: tuple[int, ...] = (SPARK, WAVE, PUFF)
#: All codes a class-label file may contain.
KNOWN_CODES: tuple[int, ...] = (BACKGROUND, SPARK, WAVE, PUFF, IGNORE)

CLASS_NAMES: dict[int, str] = {SPARK: "spark", WAVE: "wave", PUFF: "puff"}
CODE_NAMES: dict[int, str] = {BACKGROUND: "background", **CLASS_NAMES, IGNORE: "ignore"}

#: RGB colours (0-255) per code, used by previews, reports and the viewer.
CLASS_COLORS: dict[int, tuple[int, int, int]] = {
    BACKGROUND: (0, 0, 0),
    SPARK: (255, 200, 0),  # amber
    WAVE: (0, 200, 255),  # cyan
    PUFF: (230, 60, 230),  # magenta
    IGNORE: (128, 128, 128),
}


def binary_mask_hint(codes: Iterable[int]) -> str | None:
    """What to do with class labels whose codes (every code present) are those of a binary mask
    saved as 0/255, as Fiji saves a thresholded mask; None for any other codes."""
    present = {int(c) for c in codes}
    if 255 not in present or not present <= {BACKGROUND, 255}:
        return None
    return ("it looks like a binary mask (0/255): turn it into class codes, e.g. mask // 255 * 1 for sparks "
            "(* 2 waves, * 3 puffs)")


def class_code(name_or_code: str | int) -> int:
    """Return the code of an event class given as a name ('spark', 'sparks', 'Puff') or code."""
    if isinstance(name_or_code, int) or str(name_or_code).isdigit():
        code = int(name_or_code)
        if code in CODE_NAMES:
            return code
        raise ValueError(f"unknown class code {code}; known codes: {sorted(CODE_NAMES)}")
    key = str(name_or_code).strip().lower().rstrip("s")
    for code, name in CODE_NAMES.items():
        if name == key:
            return code
    raise ValueError(f"unknown class {name_or_code!r}; known classes: {', '.join(CLASS_NAMES.values())}")


def count_classes(names) -> dict[str, int]:
    """Events per class name ('spark', 'wave', 'puff', in code order) of a sequence of class names
    (an events table's ``class`` column)."""
    names = list(names)
    return {name: names.count(name) for name in CLASS_NAMES.values()}


def format_counts(counts: dict[str, int]) -> str:
    """'17 sparks, 1 wave, 3 puffs' from counts per class name (as ``Detection.counts``)."""
    return ", ".join(f"{n} {name}" + ("" if n == 1 else "s") for name, n in counts.items())
