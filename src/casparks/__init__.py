"""casparks: find, classify and measure Ca²⁺ sparks, puffs and waves in confocal x-y-t movies."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import CasparksError
from .io import Movie, read_movie, write_movie

__all__ = ["__version__", "CasparksError", "Movie", "read_movie", "write_movie"]
