"""The MONAI parts casparks uses, imported without the optional packages MONAI loads eagerly.

``import monai`` imports every MONAI subpackage and, through them, whatever optional packages
are installed: matplotlib, TensorBoard, requests, PIL, protobuf, SciPy's signal, stats,
integrate and interpolate, for features casparks never calls (plots, dataset downloads,
ultrasound maps). With MONAI 1.6.1 on the project's 2-core CPU that is 1.4 s of a 12-13 s
``casparks detect``; without them 0.3 s (``benchmarks/results/detect.md``, session 18).

While MONAI is imported, those packages are made unimportable with a ``None`` entry in
``sys.modules`` (Python's own mark for "not available"), so MONAI's ``optional_import`` records
them as missing; right after, the entries are removed and the packages import normally for
everyone else. Packages already imported are left alone. Should a MONAI version need one of
them at import, MONAI is imported again in full. This module is the one place casparks imports
MONAI from, on first use of one of its names (building or loading a network); only in the main
thread, since another thread could meanwhile import one of those packages: elsewhere (the napari
plugin's worker) MONAI is imported in full.
"""

from __future__ import annotations

import logging
import sys
import threading

log = logging.getLogger(__name__)

#: optional packages MONAI imports at import time for features casparks does not use
OPTIONAL_PACKAGES = ("matplotlib", "tensorboard", "torch.utils.tensorboard", "requests", "PIL", "google",
                     "scipy.signal", "scipy.stats", "scipy.integrate", "scipy.interpolate")


def _import_parts() -> dict:
    from monai.data.utils import compute_importance_map
    from monai.losses import FocalLoss
    from monai.networks.blocks import Convolution, UpSample
    from monai.networks.nets.attentionunet import AttentionBlock

    return {"compute_importance_map": compute_importance_map, "FocalLoss": FocalLoss,
            "Convolution": Convolution, "UpSample": UpSample, "AttentionBlock": AttentionBlock}


def _import_without(packages: tuple[str, ...]) -> dict:
    # imported already (by the user, or in full): use it as it is. Off the main thread (the napari
    # plugin loads models in a worker) another thread could import one of the packages while
    # they are marked unavailable: import in full there.
    if "monai" in sys.modules or threading.current_thread() is not threading.main_thread():
        return _import_parts()
    blocked = [name for name in packages if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        return _import_parts()
    except ImportError as exc:
        log.debug("MONAI needs an optional package at import (%s): importing it in full", exc)
        for name in [m for m in sys.modules if m == "monai" or m.startswith("monai.")]:
            del sys.modules[name]
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return _import_parts()


_NAMES = ("AttentionBlock", "Convolution", "FocalLoss", "UpSample", "compute_importance_map")
_loaded: dict = {}


def __getattr__(name: str):
    """The MONAI names above, imported (light) on first use (PEP 562)."""
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _loaded:
        _loaded.update(_import_without(OPTIONAL_PACKAGES))
    return _loaded[name]


__all__ = list(_NAMES)
