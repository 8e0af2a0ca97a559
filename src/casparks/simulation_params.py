"""Every parameter of the simulator, in physical units, with its range and literature source.

This module is *the one place* where simulation parameters are defined and documented:
:class:`SimulationConfig` is a frozen dataclass whose fields carry ``metadata`` with the unit, the
allowed bounds, a one-line description and the source of the default. :func:`parameter_table`
renders that as a Markdown table (for the docs), and presets (``casparks/presets/*.yaml``) only
override fields.

Conventions
-----------
* Lengths in µm, times in ms, speeds in µm/s, amplitudes in ΔF/F0, light in photons.
* A field whose default is a ``(low, high)`` tuple is a *range*: one value is drawn uniformly from
  it per movie (cell, light, camera, rates) or per event (amplitudes, depths). Event kinetics and
  sizes (spark/puff FWHM, rise, decay, durations, …; ``casparks.simulate.MOVIE_LEVEL``) get a
  typical value drawn uniformly per movie, and each event varies around it by
  ``movie_kinetics_spread`` (log-normal), clipped to the range. ``f0_photons`` and
  ``event_elongation`` are drawn log-uniformly; ``spark_amplitude_dff0`` is the central 90 %
  interval of a log-normal. A range with low == high is a constant.
* Rates are given per area of cell in the field and per second, so that the event counts scale
  with the field of view and the movie length.

Sources (short names used in the table)
---------------------------------------
* Cheng 1993: Cheng, Lederer & Cannell, Science 262:740 (sparks discovered; FWHM, FDHM, τ).
* Cheng 1996: Cheng et al., Am J Physiol 270:C148 (spark → wave, wave speed ~100 µm/s).
* Cheng & Lederer 2008: Physiol Rev 88:1491 (review: spark amplitude 0.3–2 ΔF/F0 in focus,
  FWHM 1–2.5 µm, FDHM 10–40 ms, time to peak ~10 ms, τ 20–40 ms; waves 50–150 µm/s).
* Izu 2001: Izu, Wier & Balke, Biophys J 80:88 (out-of-focus sparks: amplitude distribution
  decreases monotonically; sparks dimmer and slightly wider off focus; axial PSF ~1.5–2 µm).
* Bers 2002: Nature 415:198 (CRUs on z-lines, sarcomere 1.8–2 µm; CICR).
* Sobie 2002: Sobie et al., Biophys J 83:59 (spark termination, release duration ~10 ms).
* Shen 2004: Shen et al., J Physiol — CRU spacing ~0.5–1 µm transverse on the z-disc
  (also Soeller 2007, PNAS 104:14958: nearest-neighbour RyR clusters ~1 µm).
* Brochet 2011: Brochet et al., Cardiovasc Res 91:268 (atrial myocytes: sparks, long events,
  narrow cells 10–15 µm).
* Dotti 2024: reference data set (Cell Calcium 102893): 500 frames × 64 × 512 px, 0.2 µm,
  6.8 ms; 1380 sparks, 299 puffs, 37 waves in 43 movies.
* Pawley 2006: Handbook of Biological Confocal Microscopy (photon counts of a few to tens of
  photons per pixel, PMT excess noise factor 1.2–1.5, photobleaching).
* ours: a convention of this project, not a measurement.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import read_numbers_yaml
from .errors import CasparksError, yaml_error_line

Range = tuple[float, float]

PRESET_DIR = Path(__file__).with_name("presets")


def _param(default: Any, unit: str, bounds: tuple[float, float], source: str, doc: str) -> Any:
    """A dataclass field with its unit, allowed bounds, source and description."""
    return field(default=default, metadata={"unit": unit, "bounds": bounds, "source": source, "doc": doc})


@dataclass(frozen=True)
class SimulationConfig:
    """All parameters of one simulated data set. See the module docstring for conventions."""

    # --- sampling (the reference data's geometry) --------------------------------------------
    n_frames: int = _param(500, "frames", (8, 100_000), "Dotti 2024", "frames per movie")
    height_px: int = _param(64, "px", (8, 4096), "Dotti 2024", "frame height (y, across the cell)")
    width_px: int = _param(512, "px", (8, 8192), "Dotti 2024", "frame width (x, along the cell)")
    pixel_size_um: float = _param(0.2, "µm", (0.01, 5.0), "Dotti 2024", "pixel size")
    frame_interval_ms: float = _param(6.8, "ms", (0.1, 1000.0), "Dotti 2024", "time between frames")

    # --- the cell and its resting fluorescence F0 ----------------------------------------------
    cell_width_um: Range = _param(
        (10.0, 22.0), "µm", (1.0, 100.0), "Brochet 2011; Bers 2002",
        "cell width across its long axis (atrial 10-15 µm, ventricular 15-25 µm); the field is "
        "12.8 µm high, so wide cells fill it and narrow ones show their edges")
    cell_offset_um: Range = _param(
        (-4.0, 4.0), "µm", (-100.0, 100.0), "ours",
        "offset of the cell's centre line from the centre of the field, across the cell")
    cell_tilt_deg: Range = _param(
        (-3.0, 3.0), "deg", (-45.0, 45.0), "ours", "angle of the cell's long axis to the x axis")
    cell_curvature_per_um: Range = _param(
        (-4e-4, 4e-4), "1/µm", (-0.01, 0.01), "ours",
        "bend of the centre line: y shift = curvature × (x − centre)²")
    cell_edge_um: Range = _param(
        (0.4, 1.0), "µm", (0.05, 10.0), "ours; Pawley 2006",
        "width of the smooth fall-off of F0 at the membrane (lateral PSF + membrane curvature)")
    cell_end_probability: float = _param(
        0.15, "probability", (0.0, 1.0), "ours",
        "chance that one rounded end of the cell lies inside the field")
    sarcomere_um: Range = _param(
        (1.8, 2.0), "µm", (0.5, 5.0), "Bers 2002", "z-line (sarcomere) spacing along the cell")
    striation_contrast: Range = _param(
        (0.03, 0.15), "fraction of F0", (0.0, 1.0), "ours (visible striations in Fluo-4 images)",
        "relative modulation of F0 along the cell at the sarcomere period")
    unevenness: Range = _param(
        (0.05, 0.2), "fraction of F0", (0.0, 1.0), "ours",
        "standard deviation of the smooth variation of F0 inside the cell")
    unevenness_scale_um: Range = _param(
        (5.0, 15.0), "µm", (0.2, 100.0), "ours (1.5-4 µm: patches of mitochondria or dye in organelles)",
        "correlation length of that variation (Gaussian σ), drawn per movie; blobs of 2-5 µm are the size of puffs")
    nucleus_probability: float = _param(
        0.3, "probability", (0.0, 1.0), "ours", "chance of a nucleus-like blob in the field")
    nucleus_contrast: Range = _param(
        (-0.25, 0.35), "fraction of F0", (-1.0, 2.0), "ours",
        "relative F0 change inside the nucleus (Fluo-4 is often brighter there)")
    bright_spot_density: Range = _param(
        (0.0, 1.5), "spots/100 µm²", (0.0, 100.0), "Pawley 2006 (AM-ester dye compartmentalisation)",
        "static bright puncta of dye in organelles, which do not respond to Ca²⁺")
    bright_spot_contrast: Range = _param(
        (0.2, 1.0), "fraction of F0", (0.0, 10.0), "ours", "peak brightness of a punctum over the cell's F0")
    background_fraction: Range = _param(
        (0.02, 0.12), "fraction of F0", (0.0, 1.0), "Pawley 2006",
        "autofluorescence/stray light outside the cell, relative to the cell's F0")
    bleach_fraction: Range = _param(
        (0.0, 0.08), "fraction", (0.0, 0.9), "Pawley 2006",
        "fraction of F0 lost to photobleaching over the movie (exponential)")

    baseline_drift: Range = _param(
        (0.0, 0.03), "fraction of F0", (0.0, 0.5), "Pawley 2006 (focus and laser power drift)",
        "standard deviation of slow (0.3-1 s) random changes of F0 over the movie")

    # --- light and camera ----------------------------------------------------------------------
    f0_photons: Range = _param(
        (3.0, 40.0), "photons/px/frame", (0.05, 1e5), "Pawley 2006",
        "resting photons per pixel per frame inside the cell, drawn log-uniformly per movie "
        "(low: barely visible events; high: clean)")
    gain_adu_per_photon: Range = _param(
        (8.0, 30.0), "ADU/photon", (0.01, 1000.0), "ours", "detector gain")
    offset_adu: Range = _param(
        (50.0, 400.0), "ADU", (0.0, 60000.0), "ours", "detector offset (dark level)")
    read_noise_adu: Range = _param(
        (2.0, 15.0), "ADU", (0.0, 5000.0), "ours", "Gaussian read noise (standard deviation)")
    excess_noise_factor: Range = _param(
        (1.1, 1.4), "factor", (1.0, 3.0), "Pawley 2006",
        "PMT/HyD excess noise factor (1 = pure Poisson)")

    scan_lowpass: Range = _param(
        (0.0, 0.3), "weight", (0.0, 1.0), "ours (detector bandwidth correlates pixels along the scan)",
        "weight of each x-neighbour in a 3-tap low-pass of the detector signal along the fast axis")
    frame_flicker: Range = _param(
        (0.0, 0.02), "fraction", (0.0, 0.5), "Pawley 2006 (laser intensity noise)",
        "standard deviation of the frame-to-frame excitation fluctuation")
    line_flicker: Range = _param(
        (0.0, 0.015), "fraction", (0.0, 0.5), "Pawley 2006 (laser intensity noise)",
        "standard deviation of the line-to-line (row) excitation fluctuation")
    illumination_gradient: Range = _param(
        (0.0, 0.0), "fraction", (0.0, 0.9), "Pawley 2006 (field flatness of confocal scanners)",
        "fall of the excitation across the field, in a random direction (0.5: the far side gets half); "
        "it scales resting fluorescence and events alike")

    # --- release units -------------------------------------------------------------------------
    cru_spacing_um: Range = _param(
        (0.6, 1.0), "µm", (0.1, 5.0), "Shen 2004; Soeller 2007",
        "spacing of CRUs along a z-line (across the cell)")
    cru_jitter_um: float = _param(
        0.15, "µm", (0.0, 2.0), "ours", "random displacement of each CRU from the lattice")
    cru_eagerness_sigma: float = _param(
        0.8, "log units", (0.0, 5.0), "ours (repeating spark sites, Cheng & Lederer 2008)",
        "σ of the log-normal per-CRU weight: larger → more repeated sites")

    edge_cru_weight: Range = _param(
        (1.0, 4.0), "factor", (0.0, 100.0), "Brochet 2011; Mackenzie 2001 (atrial sparks start at the periphery)",
        "relative spark/puff rate of CRUs just under the membrane (falls off over ~1 µm inwards)")

    movie_kinetics_spread: float = _param(
        0.2, "log units", (0.0, 5.0), "ours (cell-to-cell variability, Cheng & Lederer 2008)",
        "event kinetics and sizes vary by this log-σ around a typical value drawn per movie from "
        "each range (large values: every event drawn from the whole range)")

    # --- sparks --------------------------------------------------------------------------------
    spark_rate: Range = _param(
        (3.0, 16.0), "sparks/(1000 µm²·s)", (0.0, 1e4), "Dotti 2024 (≈32 sparks/movie)",
        "spontaneous spark rate per area of cell in the field (drawn per movie)")
    spark_amplitude_dff0: Range = _param(
        (0.5, 2.0), "ΔF/F0", (0.01, 20.0), "Cheng & Lederer 2008; Izu 2001",
        "in-focus peak amplitude: the central 90 % interval (5th-95th percentile) of a log-normal "
        "distribution (not a uniform range); depth then makes the observed distribution decrease")
    spark_depth_um: Range = _param(
        (0.0, 2.0), "µm", (0.0, 10.0), "Izu 2001",
        "distance of the CRU from the focal plane, drawn uniformly (uniform in 3-D)")
    axial_fwhm_um: float = _param(
        1.8, "µm", (0.1, 10.0), "Izu 2001; Pawley 2006",
        "axial FWHM of the confocal PSF convolved with the spark's own axial extent")
    spark_fwhm_um: Range = _param(
        (1.2, 2.2), "µm", (0.1, 10.0), "Cheng 1993; Cheng & Lederer 2008",
        "in-focus FWHM at the peak, geometric mean of x and y (widens off focus and during the decay)")
    spark_tail_fraction: Range = _param(
        (0.0, 0.3), "fraction", (0.0, 0.9), "ours (sparks are sharper-peaked than a Gaussian, Cheng & Lederer 2008)",
        "weight of a 2.5× wider Gaussian added to the core (the FWHM stays spark_fwhm_um)")
    event_elongation: Range = _param(
        (0.8, 1.25), "ratio", (0.1, 10.0), "ours (anisotropic diffusion along/across the cell)",
        "ratio of the x to the y FWHM of sparks and puffs (drawn log-uniformly)")
    spark_rise_ms: Range = _param(
        (5.0, 15.0), "ms", (0.1, 1000.0), "Sobie 2002; Cheng & Lederer 2008",
        "release duration = time to peak")
    spark_decay_ms: Range = _param(
        (18.0, 40.0), "ms", (0.1, 5000.0), "Cheng 1993; Cheng & Lederer 2008",
        "exponential decay time constant τ after the peak")
    spark_diffusion_um2_per_ms: Range = _param(
        (0.002, 0.008), "µm²/ms", (0.0, 1.0), "ours (FWHM grows 10-30 % per τ, Cheng & Lederer 2008)",
        "apparent diffusion widening during the decay: σ² grows by 2·D·(t − t_peak)")
    cluster_probability: float = _param(
        0.2, "probability", (0.0, 1.0), "Cheng & Lederer 2008 (spark clusters, macrosparks)",
        "chance that a spark triggers neighbours")
    cluster_size: Range = _param(
        (1.0, 3.0), "sparks", (0.0, 50.0), "ours", "number of extra sparks in a cluster")
    cluster_radius_um: float = _param(
        2.2, "µm", (0.1, 20.0), "Cheng 1996 (CICR between neighbouring CRUs)",
        "neighbouring CRUs within this distance may be triggered")
    cluster_delay_ms: Range = _param(
        (3.0, 40.0), "ms", (0.0, 1000.0), "Cheng 1996", "delay of a triggered neighbour")

    # --- puffs (long local non-propagating release) --------------------------------------------
    puff_rate: Range = _param(
        (0.4, 3.0), "puffs/(1000 µm²·s)", (0.0, 1e4), "Dotti 2024 (≈7 puffs/movie)",
        "rate of long local release events per area of cell in the field")
    puff_amplitude_dff0: Range = _param(
        (0.25, 1.2), "ΔF/F0", (0.0, 20.0), "Brochet 2011; ours", "in-focus plateau amplitude")
    puff_depth_um: Range = _param(
        (0.0, 1.5), "µm", (0.0, 10.0), "Izu 2001", "distance from the focal plane")
    puff_fwhm_um: Range = _param(
        (1.8, 3.5), "µm", (0.1, 20.0), "Brochet 2011; ours", "in-focus FWHM (wider than sparks)")
    puff_duration_ms: Range = _param(
        (100.0, 600.0), "ms", (1.0, 1e5), "Dotti 2024 (domain brief)", "release duration")
    puff_on_ms: Range = _param(
        (30.0, 150.0), "ms", (0.1, 1e5), "ours", "mean open time of the flickering release")
    puff_off_ms: Range = _param(
        (5.0, 30.0), "ms", (0.1, 1e5), "ours", "mean closed time of the flickering release")
    puff_rise_ms: Range = _param(
        (8.0, 25.0), "ms", (0.1, 1e4), "ours", "time constant of the rise while open")
    puff_decay_ms: Range = _param(
        (25.0, 60.0), "ms", (0.1, 1e4), "Cheng & Lederer 2008", "decay time constant when closed")

    # --- waves ---------------------------------------------------------------------------------
    wave_probability: float = _param(
        0.6, "probability", (0.0, 1.0), "Dotti 2024 (37 waves in 43 movies)",
        "chance that a movie has a wave")
    extra_wave_probability: float = _param(
        0.2, "probability", (0.0, 1.0), "ours", "chance of each further wave, given one")
    wave_speed_um_per_s: Range = _param(
        (50.0, 150.0), "µm/s", (1.0, 5000.0), "Cheng 1996; Cheng & Lederer 2008", "propagation speed")
    wave_amplitude_dff0: Range = _param(
        (1.0, 3.0), "ΔF/F0", (0.0, 50.0), "Cheng 1996", "peak amplitude")
    wave_rise_ms: Range = _param(
        (10.0, 30.0), "ms", (0.1, 1e4), "Cheng 1996", "local time to peak")
    wave_decay_ms: Range = _param(
        (150.0, 450.0), "ms", (1.0, 1e5), "Cheng 1996; Bers 2002", "local decay time constant")
    wave_saltatory_probability: float = _param(
        0.0, "probability", (0.0, 1.0), "Keizer et al. 1998 (fire-diffuse-fire); benchmarks/physical_sim.py",
        "chance that a wave's front jumps z-line by z-line (the pixels of each z-line light up together, "
        "those between lines a few ms later) instead of moving smoothly")
    wave_outside_probability: float = _param(
        0.4, "probability", (0.0, 1.0), "ours", "chance that a wave starts outside the field")
    wave_max_distance_um: Range = _param(
        (40.0, 400.0), "µm", (1.0, 1e5), "ours (abortive waves)",
        "distance after which a wave dies out")

    wave_refractory_ms: Range = _param(
        (200.0, 600.0), "ms", (0.0, 1e5), "Cheng & Lederer 2008; Brochet 2011 (SR depletion after release)",
        "no spark or puff starts at a CRU for this long after a wave passed it")

    # --- ground truth (what an annotator would draw) -------------------------------------------
    label_fraction: float = _param(
        0.3, "fraction of peak", (0.01, 1.0), "ours (spark labels ≈ 2-3 µm, a few tens of ms)",
        "an event covers the voxels where its own ΔF/F0 ≥ this fraction of its peak …")
    label_floor_dff0: float = _param(
        0.1, "ΔF/F0", (0.0, 10.0), "ours", "… and ≥ this absolute visibility floor")
    visibility_snr: float = _param(
        3.0, "SNR", (0.0, 1000.0), "ours (Cheng 1999 detection criterion ≈ 3-4 SD)",
        "events with a lower SNR (see simulate.event_snr) are labelled ignore")
    eye_sigma_um: float = _param(
        0.2, "µm", (0.0, 10.0), "ours", "spatial Gaussian smoothing an annotator's eye applies")
    eye_sigma_ms: float = _param(
        6.8, "ms", (0.0, 1000.0), "ours", "least temporal Gaussian smoothing an annotator's eye applies")
    eye_max_sigma_ms: float = _param(
        40.0, "ms", (0.0, 10000.0), "ours",
        "most temporal smoothing: the eye follows an event over about its duration, up to this σ")
    ignore_width_um: float = _param(
        0.4, "µm", (0.0, 20.0), "ours", "ignore shell around every event, in space")
    ignore_width_ms: float = _param(
        13.6, "ms", (0.0, 1000.0), "ours", "ignore shell around every event, in time")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            low, high = f.metadata["bounds"]
            values = value if isinstance(value, tuple) else (value,)
            if isinstance(f.default, tuple) and (len(values) != 2 or values[0] > values[1]):
                raise _bad(f.name, value, "a range [low, high] with low <= high")
            for v in values:
                if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                    raise _bad(f.name, value, "a finite number")
                if not low <= v <= high:
                    raise _bad(f.name, value, f"within [{low:g}, {high:g}] {f.metadata['unit']}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (ranges as lists) that :func:`config_from_dict` reads back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _bad(name: str, value: Any, expected: str) -> CasparksError:
    return CasparksError(f"simulation parameter {name}={value!r} is invalid", fix=f"give {expected}")


def _known() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(SimulationConfig)}


def coerce_value(name: str, value: Any) -> Any:
    """Convert ``value`` (possibly a string from ``--set``) to the type of field ``name``."""
    known = _known()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see casparks.simulation_params"
        raise CasparksError(f"unknown simulation parameter {name!r}", fix=hint)
    default = known[name].default
    if isinstance(value, str):
        text = value.strip()
        if isinstance(default, tuple) and "," in text and not text.startswith("["):
            text = f"[{text}]"
        try:
            value = read_numbers_yaml(text)
        except yaml.YAMLError:
            raise _bad(name, value, "a number" if not isinstance(default, tuple) else "low,high") from None
    try:
        if isinstance(default, tuple):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return (float(value), float(value))
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise TypeError
            return tuple(_number(v, float) for v in value)
        if isinstance(default, int):
            number = _number(value, float)
            if number != int(number):
                raise TypeError
            return int(number)
        return _number(value, float)
    except (TypeError, ValueError):
        expected = "a range low,high" if isinstance(default, tuple) else (
            "a whole number" if isinstance(default, int) else "a number")
        raise _bad(name, value, expected) from None


def _number(value: Any, kind: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    return kind(value)


def config_from_dict(values: Mapping[str, Any], base: SimulationConfig | None = None) -> SimulationConfig:
    """``base`` (default: the defaults) with ``values`` applied; unknown keys are errors."""
    base = base if base is not None else SimulationConfig()
    changes = {str(k): coerce_value(str(k), v) for k, v in values.items()}
    return dataclasses.replace(base, **changes)


# ----------------------------------------------------------------------------------------------
# presets


def _preset_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def _read_preset(path: Path) -> dict[str, Any]:
    try:
        data = read_numbers_yaml(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise CasparksError(f"cannot read the preset ({exc.strerror or exc})", path=path, fix="check the path") from None
    except yaml.YAMLError as exc:  # one line, as a train config's
        raise CasparksError(f"the preset is not valid YAML{yaml_error_line(exc)}", path=path,
                            fix="fix the syntax") from None
    if not isinstance(data, dict) or not isinstance(data.get("parameters", {}) or {}, dict):
        raise CasparksError(
            "a preset is a mapping with 'description' and 'parameters'", path=path,
            fix="see casparks/presets/default.yaml")
    unknown = set(data) - {"description", "parameters", "provenance"}
    if unknown:
        raise CasparksError(f"unknown preset keys {sorted(unknown)}", path=path,
                            fix="use 'description' and 'parameters'")
    return data


def save_simulation_config(path: str | Path, config: SimulationConfig, description: str = "",
                           provenance: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``config`` as a preset YAML (loadable with :func:`load_simulation_config`)."""
    from .io import atomic_output

    data: dict[str, Any] = {"description": description or "saved simulation parameters",
                            "parameters": config.to_dict()}
    if provenance:
        data["provenance"] = dict(provenance)
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return Path(path)


def list_presets() -> dict[str, str]:
    """Preset name → one-line description."""
    out = {}
    for name, path in _preset_files().items():
        lines = str(_read_preset(path).get("description") or "").strip().splitlines()
        out[name] = lines[0] if lines else ""
    return out


def _preset_path(preset: str | Path) -> Path:
    """The YAML file of a preset: a bundled one by name, or the file given."""
    path = Path(preset)
    files = _preset_files()
    if str(preset) in files:
        return files[str(preset)]
    if path.suffix.lower() in (".yaml", ".yml") and not path.exists():  # a mistyped file, not an unknown name
        raise CasparksError("preset file not found", path=path,
                            fix=f"check the path, or give a bundled preset: {', '.join(files)}")
    if not (path.suffix.lower() in (".yaml", ".yml") and path.is_file()):
        raise CasparksError(
            f"unknown simulation preset {str(preset)!r}",
            fix=f"known presets: {', '.join(files)} (or give a YAML file)")
    return path


#: what a data set's ``simulation_FIRST-LAST.yaml`` records of its run (besides the parameters),
#: with the smallest value each may take
RECORDED_RUN = {"seed": 0, "first_id": 0, "n_movies": 1}


def recorded_run(preset: str | Path) -> dict[str, int]:
    """The seed, first id and number of movies a data set's saved parameters record (its
    ``provenance``), {} for a preset without them: what ``--preset FILE`` reproduces where they
    are not given anew (the parameters alone made other movies with the default seed)."""
    path = _preset_path(preset)
    provenance = _read_preset(path).get("provenance") or {}
    if not isinstance(provenance, dict):
        raise CasparksError("its provenance is not a mapping", path=path, fix="correct or delete it")
    run = {}
    for key, least in RECORDED_RUN.items():
        value = provenance.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise CasparksError(f"its provenance {key} {value!r} is not a whole number >= {least}", path=path,
                                fix=f"correct or delete it, or pass --{key.replace('n_', '').replace('_', '-')}")
        run[key] = value
    return run


def load_simulation_config(preset: str | Path = "default", overrides: Mapping[str, object] | None = None
                           ) -> SimulationConfig:
    """A preset (a name from :func:`list_presets` or a YAML file) with ``overrides`` applied."""
    path = _preset_path(preset)
    data = _read_preset(path)
    try:
        config = config_from_dict(data.get("parameters") or {})
    except CasparksError as exc:
        raise CasparksError(f"in preset {path.name}: {exc.what}", path=path, fix=exc.fix) from None
    if isinstance(overrides, (str, bytes)):  # "n_frames=40" was "dictionary update sequence element #0 …"
        raise CasparksError(f"overrides must be a mapping of parameters, got the text {overrides!r}",
                            fix="pass, e.g., {'n_frames': 40} (the command line's --set n_frames=40)")
    try:
        values = dict(overrides or {})
    except (TypeError, ValueError):
        raise CasparksError(f"overrides must be a mapping of parameters, got {overrides!r}",
                            fix="pass, e.g., {'n_frames': 40}") from None
    return config_from_dict(values, config)


def parameter_table() -> str:
    """Markdown table of every parameter: name, default, unit, description, source."""
    rows = ["| parameter | default | unit | description | source |", "|---|---|---|---|---|"]
    for f in fields(SimulationConfig):
        default = f.default
        text = f"{default[0]:g}–{default[1]:g}" if isinstance(default, tuple) else f"{default:g}"
        rows.append(f"| `{f.name}` | {text} | {f.metadata['unit']} | {f.metadata['doc']} | {f.metadata['source']} |")
    return "\n".join(rows)


def parameter_document() -> str:
    """The Markdown page docs/simulation_parameters.md: presets, parameter table and sources."""
    sources = __doc__[__doc__.index("Sources (short names used in the table)"):].split("\n", 2)[2]
    presets = "\n".join(f"| `{name}` | {description} |" for name, description in list_presets().items())
    return f"""# Simulator parameters

Every parameter of `casparks simulate`, with its default, unit, description and source. Ranges
`low–high` are drawn per movie or per event (see the conventions in
[`simulation_params.py`](../src/casparks/simulation_params.py)). Override any of them with
`casparks simulate OUT --set NAME=VALUE` (a range as `--set "NAME=[low, high]"`), or with a preset.

This page is generated from the code and a test keeps it in sync; regenerate it with
`python -c "import casparks.simulation_params as p; print(p.parameter_document(), end='')" > docs/simulation_parameters.md`.

## Presets

| preset | description |
|---|---|
{presets}

A YAML file with a `description` and `parameters` to override works as a preset too
(`--preset my_preset.yaml`); every simulated data set holds a `simulation_FIRST-LAST.yaml` that
reproduces it.

## Parameters

{parameter_table()}

## Sources

{sources.strip()}
"""

