"""A second, physically based simulator of x-y-t movies: a held-out check of a model's generality.

    python benchmarks/physical_sim.py --out DIR [--movies 8] [--seed 1000] [--geometry reference|other]
                                      [--kinds sparks puffs waves] [--detector texture=0 ...]
                                      [--ids 1 3] [--workers 2]

Results of the bundled model on its movies: benchmarks/results/physical.md.

casparks' own simulator (``casparks.simulate``) draws each event's shape from phenomenological
formulas (a Gaussian core and tail, exponential decay); every bundled model was trained on it. A
model may therefore learn that simulator's quirks. This one shares no event code with it: the
fluorescence comes from the physics of Ca²⁺ release, and the events are what that physics makes.

1. **Release and reaction-diffusion** (:func:`solve_release`): a Ca²⁺ current (pA) enters a small
   sphere (a cluster of RyRs); Ca²⁺ diffuses in 3-D and binds Fluo-4 (mobile), troponin C and
   the SR / calmodulin sites (stationary); SERCA pumps it back, a leak balances the pump at rest.
   The source is a point, so the fields are radially symmetric: a finite-volume solve in r
   (implicit diffusion, semi-implicit binding), after Smith, Keizer, Stern, Lederer & Cheng
   (1998, Biophys J 75:15) with Fluo-4's constants.
2. **Optics** (:func:`psf_operator`): the confocal point-spread function (a 3-D Gaussian) blurs the
   3-D fluorescence; a site at depth z from the focal plane is seen dimmer and wider. Linear, so
   precomputed once as a matrix from the radial profile to the focal plane's lateral profile.
3. **Sites and triggering** (fire-diffuse-fire, Keizer, Smith, Ponce-Dawson & Pearson 1998): release
   sites sit on the z-lines of a 3-D lattice around the focal plane. They fire at random
   (sparks) or as long, flickering releases of a few channels (puffs); a site fires when the
   free Ca²⁺ that sites fired before bring to it passes a threshold. Above the cell's usual
   threshold that makes a few sparks trigger neighbours; with a lowered threshold (Ca²⁺
   overload) a cascade spreads: a wave, whose speed comes out of the physics.
4. **Detector**: resting fluorescence over a cell band, bleaching, Poisson photon counts, gain,
   offset and Gaussian read noise, uint16; each frame scanned row by row.
5. **Truth** in the original format (``NN_video.tif``, ``NN_class_label.tif``,
   ``NN_event_label.tif``, plus ``NN_events.csv``): an event covers the voxels where its own
   noise-free ΔF/F0 is at least ``LABEL_FRACTION`` of its peak and ``LABEL_FLOOR``; overlaps go
   to the larger contribution; events an annotator could not see (smoothed peak below
   ``VISIBILITY_SNR`` noise SDs) are ignore (4). For sparks and puffs the table also has their
   continuous course at the centre (:func:`centre_course`), what the frames sample: peak,
   FDHM and time to peak as ``casparks.measure`` defines them.

Why in ``benchmarks/`` and not in the package: it is a referee for models, not a source of
training data; training on it would spend its value as a held-out check.
"""

from __future__ import annotations

import argparse
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.special import i0e

# --- physical constants (µM, ms, µm, pA) ------------------------------------------------------

#: Ca²⁺ ions per ms carried by 1 pA, in µM·µm³ (1 pA = 3.12e3 Ca²⁺/ms; 1 µM in 1 µm³ = 602 ions).
PA_TO_FLUX = 6.2415e6 / 2 / 1e3 / 602.214


@dataclass(frozen=True)
class Buffer:
    """A Ca²⁺ buffer: total µM, on-rate µM⁻¹ms⁻¹, off-rate ms⁻¹, diffusion µm²/ms (0: stationary)."""

    total: float
    k_on: float
    k_off: float
    diffusion: float = 0.0


@dataclass(frozen=True)
class Cytosol:
    """Smith et al. 1998's myocyte cytosol with 50 µM Fluo-4 (Kd 1 µM, Gee et al. 2000; rates as in cytosol)."""

    ca_rest: float = 0.1
    d_ca: float = 0.3
    dye: Buffer = Buffer(50.0, 0.06, 0.06, 0.05)  # slowed by binding to proteins in cytosol
    troponin: Buffer = Buffer(70.0, 0.039, 0.02)
    sr_sites: Buffer = Buffer(47.0, 0.115, 0.1)
    calmodulin: Buffer = Buffer(24.0, 0.1, 0.038)
    serca_vmax: float = 0.208  # µM/ms
    serca_km: float = 0.184  # µM
    serca_hill: float = 3.9
    dye_dynamic_range: float = 100.0  # F_max / F_min of Fluo-4

    @property
    def buffers(self) -> tuple[Buffer, ...]:
        return (self.dye, self.troponin, self.sr_sites, self.calmodulin)


CYTOSOL = Cytosol()
R_MAX_UM = 8.0  # outer radius of the radial domain (held at rest)
DR_UM = 0.05
DT_MS = 0.02  # integration step (binding is semi-implicit, diffusion implicit)
SAVE_MS = 0.5  # time step of the stored solution
SOURCE_RADIUS_UM = 0.1  # the RyR cluster's release sphere
RHO_STEP_UM = 0.05
RHO_MAX_UM = 4.0
DEPTHS_UM = np.round(np.arange(0.0, 2.01, 0.1), 3)  # |z| of a site from the focal plane
PSF_FWHM_XY_UM = 0.5
PSF_FWHM_Z_UM = 1.6

LABEL_FRACTION = 0.3
LABEL_FLOOR = 0.1
VISIBILITY_SNR = 3.5  # peak over noise SD after a ~0.6 µm × 0.6 µm × 20 ms mean (smoothed_peak; Cheng et al. 1999: 3-4 SD)

BACKGROUND, SPARK, WAVE, PUFF, IGNORE = 0, 1, 2, 3, 4


# --- 1. release and reaction-diffusion ----------------------------------------------------------


@dataclass(frozen=True)
class RadialSolution:
    """Fields of one release, every ``SAVE_MS``: time (ms), radius (µm), free Ca²⁺ elevation over
    rest (µM) and the 3-D ΔF/F0 of the dye, both (time, radius)."""

    t_ms: np.ndarray
    r_um: np.ndarray
    ca_excess: np.ndarray
    dff0: np.ndarray


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell centres, volumes (µm³) and outer face areas (µm²) of the radial finite volumes."""
    n = int(round(R_MAX_UM / DR_UM))
    faces = np.arange(n + 1) * DR_UM
    volumes = 4.0 / 3.0 * math.pi * (faces[1:] ** 3 - faces[:-1] ** 3)
    return 0.5 * (faces[1:] + faces[:-1]), volumes, 4.0 * math.pi * faces[1:] ** 2


@lru_cache(maxsize=8)
def _implicit_diffusion(d: float) -> np.ndarray:
    """Inverse of (I − dt·D·L) for the radial Laplacian L; the outer boundary is held at rest."""
    _, volumes, areas = _grid()
    n = volumes.size
    conductance = d * areas / DR_UM  # µm³/ms through each outer face
    a = np.zeros((n, n))
    idx = np.arange(n)
    a[idx, idx] -= conductance / volumes
    a[idx[1:], idx[1:]] -= conductance[:-1] / volumes[1:]
    a[idx[:-1], idx[1:]] += conductance[:-1] / volumes[:-1]
    a[idx[1:], idx[:-1]] += conductance[:-1] / volumes[1:]
    return np.linalg.inv(np.eye(n) - DT_MS * a)


def solve_release(current_pa: np.ndarray, after_ms: float, cytosol: Cytosol = CYTOSOL) -> RadialSolution:
    """Fields of a release whose current is ``current_pa`` (one value per ``DT_MS`` step), followed
    by ``after_ms`` without release.

    Deviations from rest are integrated, so the resting state (pump and leak balanced) is
    exactly zero and the outer boundary is held there.
    """
    r, volumes, _ = _grid()
    c0 = cytosol.ca_rest
    buffers = cytosol.buffers
    k_on, k_off, total, bound0 = _buffer_constants(cytosol)
    inv_ca = _implicit_diffusion(cytosol.d_ca)
    inv_b = [(_implicit_diffusion(b.diffusion) if b.diffusion > 0 else None) for b in buffers]
    source = (r < SOURCE_RADIUS_UM).astype(float) * volumes
    source *= PA_TO_FLUX / source.sum() / volumes  # µM/ms per pA in each source cell

    n_release = len(current_pa)
    n_steps = n_release + int(round(after_ms / DT_MS))
    save_every = int(round(SAVE_MS / DT_MS))
    ca = np.zeros_like(r)  # excess over rest
    bound = np.zeros((len(buffers), r.size))  # excess over rest
    pump_rest = _serca(c0, cytosol)
    saved_ca, saved_dye = [], []
    k_on, k_off, total = k_on[:, None], k_off[:, None], total[:, None]
    for step in range(n_steps):
        if step % save_every == 0:
            saved_ca.append(ca.copy())
            saved_dye.append(bound[0].copy())
        if step < n_release and current_pa[step] > 0:
            ca += DT_MS * current_pa[step] * source
        free_ca = np.maximum(ca + c0, 0.0)
        b_abs = bound + bound0[:, None]
        new_b = _bind(b_abs, free_ca, DT_MS, k_on, k_off, total)
        ca -= (new_b - b_abs).sum(axis=0)
        bound = new_b - bound0[:, None]
        ca -= DT_MS * (_serca(np.maximum(ca + c0, 0.0), cytosol) - pump_rest)
        ca = inv_ca @ ca
        for i, inv in enumerate(inv_b):
            if inv is not None:
                bound[i] = inv @ bound[i]
    dye = cytosol.dye
    f_rest = _fluorescence(bound0[0], dye.total, cytosol.dye_dynamic_range)
    bound_dye = np.array(saved_dye) + bound0[0]
    dff0 = _fluorescence(bound_dye, dye.total, cytosol.dye_dynamic_range) / f_rest - 1.0
    t = np.arange(len(saved_ca)) * SAVE_MS
    return RadialSolution(t, r, np.array(saved_ca, dtype=np.float32), dff0.astype(np.float32))


def _buffer_constants(cytosol: Cytosol) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per buffer (dye first): on-rate, off-rate, total and the amount bound at resting Ca²⁺."""
    buffers = cytosol.buffers
    k_on = np.array([b.k_on for b in buffers])
    k_off = np.array([b.k_off for b in buffers])
    total = np.array([b.total for b in buffers])
    return k_on, k_off, total, total * cytosol.ca_rest / (cytosol.ca_rest + k_off / k_on)


def _bind(bound: np.ndarray, free_ca: np.ndarray | float, dt: float, k_on: np.ndarray, k_off: np.ndarray,
          total: np.ndarray) -> np.ndarray:
    """Bound Ca²⁺ after one step of binding, semi-implicit in the bound amount: stable and positive
    at any Ca²⁺ (the radial solve and the well-mixed one share it)."""
    return (bound + dt * k_on * free_ca * total) / (1.0 + dt * (k_on * free_ca + k_off))


def _serca(ca: np.ndarray | float, cytosol: Cytosol) -> np.ndarray | float:
    x = np.power(ca / cytosol.serca_km, cytosol.serca_hill)
    return cytosol.serca_vmax * x / (1.0 + x)


def _fluorescence(bound: np.ndarray | float, total: float, dynamic_range: float) -> np.ndarray | float:
    """Fluorescence of the dye in units of the bound form's brightness."""
    return bound + (total - bound) / dynamic_range


# --- 2. optics ----------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def psf_operator() -> tuple[np.ndarray, np.ndarray]:
    """(depths × ρ × r) matrices taking a radially symmetric 3-D ΔF/F0 (at the radial grid) to the
    focal plane's ΔF/F0 at lateral distance ρ from a site at each depth; and the ρ grid (µm).

    The 3-D field is sampled on an axisymmetric (ρ', z) grid around the site; the lateral Gaussian
    blur of an axisymmetric function is an integral over ρ' with the kernel
    exp(−(ρ² + ρ'²)/2σ²)·I0(ρρ'/σ²)/σ², the axial blur a Gaussian weight over z. Linear in the
    radial profile, so built once from the radial grid's hat functions.
    """
    r, _, _ = _grid()
    rho = np.arange(0.0, RHO_MAX_UM + 1e-9, RHO_STEP_UM)
    sxy = PSF_FWHM_XY_UM / 2.3548
    sz = PSF_FWHM_Z_UM / 2.3548
    h = 0.025
    rho_src = np.arange(h / 2, RHO_MAX_UM + 4 * sxy, h)  # ρ' midpoints
    z_src = np.arange(-3.5, 3.5 + 1e-9, 0.05)
    # lateral kernel: K[ρ, ρ'] dρ'
    arg = np.outer(rho, rho_src) / sxy**2
    lateral = i0e(arg) * np.exp(arg - (rho[:, None] ** 2 + rho_src[None] ** 2) / (2 * sxy**2)) / sxy**2
    lateral *= rho_src[None] * h
    lateral /= lateral.sum(axis=1, keepdims=True)  # a uniform field stays uniform
    # radial hat functions at s = |(ρ', z)|: weights of each radial node
    s = np.hypot(rho_src[:, None], z_src[None])  # (ρ', z)
    pos = np.clip((s - r[0]) / DR_UM, 0, r.size - 1 - 1e-9)
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    ops = np.zeros((DEPTHS_UM.size, rho.size, r.size))
    for k, depth in enumerate(DEPTHS_UM):
        wz = np.exp(-0.5 * ((z_src - depth) / sz) ** 2)
        wz /= wz.sum()
        # hat weights per (ρ', r node), summed over z with the axial weights
        hat = np.zeros((rho_src.size, r.size))
        rows = np.repeat(np.arange(rho_src.size), z_src.size)
        np.add.at(hat, (rows, lo.ravel()), ((1 - frac) * wz[None]).ravel())
        np.add.at(hat, (rows, np.minimum(lo + 1, r.size - 1).ravel()), (frac * wz[None]).ravel())
        ops[k] = lateral @ hat
    return ops.astype(np.float32), rho


@dataclass(frozen=True)
class Template:
    """What a release looks like: focal-plane ΔF/F0 (depth, time, ρ) and the free Ca²⁺ excess (time, r)."""

    current_pa: float
    release_ms: float
    observed: np.ndarray  # (depths, T, ρ) float32
    ca_excess: np.ndarray  # (T, r) float32, for triggering
    r_um: np.ndarray

    @property
    def duration_ms(self) -> float:
        return (self.observed.shape[1] - 1) * SAVE_MS


def make_template(current_pa: np.ndarray, after_ms: float, mean_pa: float | None = None) -> Template:
    """Solve a release (current per ``DT_MS`` step) and see it through the microscope."""
    sol = solve_release(current_pa, after_ms)
    ops, _ = psf_operator()
    observed = np.einsum("krn,tn->ktr", ops, sol.dff0, optimize=True).astype(np.float32)
    mean = float(np.mean(current_pa)) if mean_pa is None else mean_pa
    return Template(mean, len(current_pa) * DT_MS, observed, sol.ca_excess, sol.r_um)


# --- 3. sites, events and triggering --------------------------------------------------------------

SPARK_CURRENTS_PA = (2.5, 4.0, 6.5, 10.0, 15.0)  # library of release currents (log-spaced)
SPARK_TAUS_MS = (8.0, 13.0, 20.0)  # decay time constant of the release current
AFTER_MS = 150.0  # time simulated after a release ends
MIN_WAVE_SPREAD_UM = 20.0  # a wave crosses at least this much of the cell (casparks' wave minimum: 15 µm)
WAVE_CURRENT_PA, WAVE_TAU_MS = 2.5, 13.0  # each site of a wave releases little (a partly depleted SR)


@lru_cache(maxsize=None)
def spark_template(current_pa: float, tau_ms: float) -> Template:
    """A spark: a release current decaying as exp(−t/τ) and ending at 2τ (the RyRs close)."""
    t = np.arange(int(round(2 * tau_ms / DT_MS))) * DT_MS
    return make_template(current_pa * np.exp(-t / tau_ms), AFTER_MS, mean_pa=current_pa)


def puff_current(rng: np.random.Generator, duration_ms: float, n_channels: int, unit_pa: float,
                 open_ms: float = 8.0, closed_ms: float = 12.0) -> np.ndarray:
    """Current (pA per ``DT_MS`` step) of ``n_channels`` channels flickering open and closed
    (a telegraph process each, exponential dwell times) for ``duration_ms``."""
    n = int(round(duration_ms / DT_MS))
    current = np.zeros(n)
    for _ in range(n_channels):
        t, is_open = 0.0, rng.random() < open_ms / (open_ms + closed_ms)
        while t < duration_ms:
            dwell = rng.exponential(open_ms if is_open else closed_ms)
            if is_open:
                current[int(t / DT_MS):int(min(t + dwell, duration_ms) / DT_MS)] += unit_pa
            t += dwell
            is_open = not is_open
    return current


@dataclass(frozen=True)
class Geometry:
    """Sampling and size of a movie."""

    pixel_size_um: float = 0.2
    frame_interval_ms: float = 6.8
    n_frames: int = 500
    height_px: int = 64
    width_px: int = 512


#: casparks' reference geometry, and the other microscopes of its ``test-other`` set (one field
#: of 12.8 × 102 µm and 3.4 s at each sampling).
GEOMETRIES = {
    "reference": [Geometry()],
    "other": [Geometry(0.3, 10.0, 340, 44, 340), Geometry(0.25, 8.5, 400, 52, 410),
              Geometry(0.15, 5.0, 680, 86, 680), Geometry(0.1, 2.5, 500, 64, 512)],
    # sampled finer than any of casparks' training movies (0.1-0.3 µm, 2.5-10 ms): 1 ms frames at
    # 0.2 µm, and 0.05 µm pixels at 6.8 ms (a 12.8 × 51.2 µm field)
    "fine": [Geometry(0.2, 1.0, 3400, 64, 512), Geometry(0.05, 6.8, 500, 256, 1024)],
}

#: what each movie holds, by its index modulo 4: expected spark firings, puffs, waves
KINDS = [("sparks", 90, (0, 2), 0), ("sparks", 90, (0, 2), 0), ("puffs", 50, (4, 8), 0), ("waves", 50, (0, 2), 1)]


@dataclass
class Firing:
    """One release: site position (µm; z from the focal plane), start (ms) and its template."""

    x: float
    y: float
    z: float
    t0: float
    template: Template
    site: int = -1  # index into the movie's site lattice


@dataclass
class Event:
    """A spark, puff or wave: its class code and its firings (a wave has many)."""

    code: int
    firings: list[Firing]
    current_pa: float = math.nan  # waves: the µM released per volume
    release_ms: float = math.nan
    bulk: np.ndarray | None = None  # waves: ΔF/F0 behind the front, from its arrival (every SAVE_MS)


def site_lattice(rng: np.random.Generator, width_um: float, y_range: tuple[float, float]) -> np.ndarray:
    """Release sites (n × 3: x, y, z µm) on z-lines: every ~1.85 µm along the cell (x), every
    ~0.8 µm across it (y) and in depth (z, within ±2 µm of the focal plane), jittered."""
    spacing = rng.uniform(1.75, 1.95)
    xs = np.arange(rng.uniform(0, spacing), width_um, spacing)
    ys = np.arange(y_range[0] + rng.uniform(0, 0.8), y_range[1], 0.8)
    zs = np.arange(-2.0, 2.01, 0.8)
    grid = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid + rng.normal(0.0, [0.1, 0.2, 0.2], size=grid.shape)


def _nearest(values: tuple[float, ...], value: float) -> float:
    return min(values, key=lambda v: abs(math.log(v / value)))


def draw_sparks(rng: np.random.Generator, sites: np.ndarray, n: int, t_ms: float) -> list[Event]:
    """``n`` sparks at random sites and times (independent: at the resting threshold one spark does
    not fire its neighbours), currents log-uniform 2.5-15 pA, release τ 8-20 ms."""
    events = []
    for i in rng.integers(0, len(sites), size=n):
        current = math.exp(rng.uniform(math.log(2.5), math.log(15.0)))
        tau = rng.uniform(8.0, 20.0)
        tmpl = spark_template(_nearest(SPARK_CURRENTS_PA, current), _nearest(SPARK_TAUS_MS, tau))
        x, y, z = sites[i]
        events.append(Event(SPARK, [Firing(x, y, z, rng.uniform(-40.0, t_ms), tmpl, int(i))], tmpl.current_pa,
                            tmpl.release_ms))
    return events


def draw_puffs(rng: np.random.Generator, sites: np.ndarray, n: int, t_ms: float) -> list[Event]:
    """``n`` puffs: 3-8 channels of 0.3-0.6 pA flickering for 100-600 ms at a site near focus."""
    events = []
    near = np.flatnonzero(np.abs(sites[:, 2]) < 1.0)
    for i in rng.choice(near, size=n, replace=False) if n else []:
        duration = rng.uniform(100.0, 600.0)
        current = puff_current(rng, duration, int(rng.integers(3, 9)), rng.uniform(0.3, 0.6))
        tmpl = make_template(current, AFTER_MS)
        x, y, z = sites[i]
        events.append(Event(PUFF, [Firing(x, y, z, rng.uniform(-0.3 * duration, t_ms - 0.5 * duration), tmpl, int(i))],
                            float(current.mean()), duration))
    return events


def fire_diffuse_fire(sites: np.ndarray, first: int, t_first: float, threshold_um: float, t_ms: float,
                      tmpl: Template, refractory: np.ndarray | None = None) -> list[tuple[int, float]]:
    """Firings (site, ms) of a cascade started by site ``first`` at ``t_first``: a site fires when
    the free Ca²⁺ excess (µM) that earlier firings bring to it (the template's field at their 3-D
    distance, summed) reaches ``threshold_um``; each site fires once. 1 ms steps.
    ``refractory``: sites that cannot fire."""
    from scipy.spatial import cKDTree

    step = int(round(1.0 / SAVE_MS))
    field = tmpl.ca_excess[::step]  # (τ ms, r)
    reach = 4.0
    tree = cKDTree(sites)
    n_t = int(math.ceil(t_ms - t_first)) + 1
    length = field.shape[0]
    incoming = np.zeros((len(sites), n_t + length), dtype=np.float32)
    fired = np.zeros(len(sites), dtype=bool) if refractory is None else refractory.copy()
    fired[first] = True
    firings = [(first, t_first)]
    pending = [first]
    for t in range(n_t):
        for i in pending:
            near = np.array(tree.query_ball_point(sites[i], reach), dtype=int)
            near = near[~fired[near]]
            if near.size == 0:
                continue
            d = np.linalg.norm(sites[near] - sites[i], axis=1)
            ri = np.clip(np.searchsorted(tmpl.r_um, d), 0, tmpl.r_um.size - 1)
            incoming[near, t:t + length] += field[:, ri].T
        now = np.flatnonzero(~fired & (incoming[:, t] >= threshold_um))
        fired[now] = True
        firings.extend((int(i), t_first + t) for i in now)
        pending = list(now)
    return firings


def draw_waves(rng: np.random.Generator, sites: np.ndarray, n: int, t_ms: float) -> list[Event]:
    """``n`` waves: a cascade (:func:`fire_diffuse_fire`) from a site near focus, with a threshold
    of 0.02-0.055 µM (a Ca²⁺-overloaded cell; 55-110 µm/s on this lattice). Sites fire once per
    movie. Behind the front the cell is well mixed: the wave's fluorescence is :func:`bulk_release`
    of 30-90 µM, started where the cascade arrives."""
    tmpl = spark_template(WAVE_CURRENT_PA, WAVE_TAU_MS)
    used = np.zeros(len(sites), dtype=bool)
    events = []
    for _ in range(n):
        for _attempt in range(8):  # a cascade that stays within a few z-lines is no wave: try again
            free = np.flatnonzero(~used & (np.abs(sites[:, 2]) < 0.8))
            if free.size == 0:
                return events
            first = int(rng.choice(free))
            start = rng.uniform(-0.1 * t_ms, 0.6 * t_ms)
            cascade = fire_diffuse_fire(sites, first, start, rng.uniform(0.02, 0.055), t_ms, tmpl, refractory=used)
            idx = np.array([i for i, _ in cascade])
            if np.ptp(sites[idx, 0]) >= MIN_WAVE_SPREAD_UM:
                break
        else:
            continue
        used[idx] = True
        firings = [Firing(*sites[i], t, tmpl, int(i)) for i, t in cascade]
        total = rng.uniform(30.0, 90.0)
        events.append(Event(WAVE, firings, total, WAVE_TAU_MS, bulk=bulk_release(total, WAVE_TAU_MS)))
    return events


@lru_cache(maxsize=64)
def _bulk(total_um: float, tau_ms: float, cytosol: Cytosol = CYTOSOL) -> np.ndarray:
    dt = 0.05
    n_release, n = int(round(2 * tau_ms / dt)), int(round(2500.0 / dt))
    t = np.arange(n_release) * dt
    flux = np.exp(-t / tau_ms)
    flux *= total_um / (flux.sum() * dt)
    c0 = cytosol.ca_rest
    k_on, k_off, btot, bound = _buffer_constants(cytosol)
    rest_dye, pump_rest = bound[0], _serca(c0, cytosol)
    ca = c0
    every = int(round(SAVE_MS / dt))
    dye = np.empty(-(-n // every))
    for step in range(n):
        if step % every == 0:
            dye[step // every] = bound[0]
        if step < n_release:
            ca += dt * flux[step]
        new = _bind(bound, ca, dt, k_on, k_off, btot)
        ca = max(ca - (new - bound).sum() - dt * (_serca(ca, cytosol) - pump_rest), 0.0)
        bound = new
    f = _fluorescence(dye, btot[0], cytosol.dye_dynamic_range)
    return (f / _fluorescence(rest_dye, btot[0], cytosol.dye_dynamic_range) - 1.0).astype(np.float32)


def bulk_release(total_um: float, tau_ms: float) -> np.ndarray:
    """ΔF/F0 (every ``SAVE_MS`` for 2.5 s) of well-mixed cytosol into which ``total_um`` µM of Ca²⁺
    is released with a current decaying as exp(−t/τ) over 2τ: the buffers bind it, SERCA pumps
    it back (the slow decay of a wave)."""
    return _bulk(round(float(total_um), 1), float(tau_ms))


WAVE_REFRACTORY_MS = 400.0  # a site a wave fired stays silent this long (SR depletion; Cheng & Lederer 2008)


def _refractory(firing: Firing, wave_times: dict[int, list[float]]) -> bool:
    """Whether a spark or puff would start at a site while a wave has left it refractory (or is
    about to fire it: within 50 ms before). ``wave_times``: site → times waves fired it."""
    return any(-50.0 <= firing.t0 - t <= WAVE_REFRACTORY_MS for t in wave_times.get(firing.site, ()))


# --- 4. rendering, truth and detector -------------------------------------------------------------


def render_event(event: Event, geom: Geometry) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The event's noise-free ΔF/F0 in its bounding box of the movie (box, float32 volume)."""
    if event.bulk is not None:
        return _render_wave(event, geom)
    _, rho = psf_operator()
    px, dt = geom.pixel_size_um, geom.frame_interval_ms
    reach = rho[-1]
    boxes = []
    for f in event.firings:
        k0 = max(0, int(math.floor(f.t0 / dt)) - 1)
        k1 = min(geom.n_frames, int(math.ceil((f.t0 + f.template.duration_ms) / dt)) + 1)
        y0 = max(0, int(math.floor((f.y - reach) / px)))
        y1 = min(geom.height_px, int(math.ceil((f.y + reach) / px)) + 1)
        x0 = max(0, int(math.floor((f.x - reach) / px)))
        x1 = min(geom.width_px, int(math.ceil((f.x + reach) / px)) + 1)
        if k1 > k0 and y1 > y0 and x1 > x0:
            boxes.append((f, (k0, k1, y0, y1, x0, x1)))
    if not boxes:
        return None
    lo = np.min([b[1][0::2] for b in boxes], axis=0)
    hi = np.max([b[1][1::2] for b in boxes], axis=0)
    volume = np.zeros(tuple(hi - lo), dtype=np.float32)
    for f, (k0, k1, y0, y1, x0, x1) in boxes:
        obs = f.template.observed[min(int(round(abs(f.z) / 0.1)), DEPTHS_UM.size - 1)]  # (T, ρ)
        k = np.arange(k0, k1)[:, None, None]
        y = np.arange(y0, y1)[None, :, None]
        x = np.arange(x0, x1)[None, None, :]
        t = ((k + (y + 0.5) / geom.height_px) * dt - f.t0) / SAVE_MS  # row y is scanned later in the frame
        r = np.hypot((y + 0.5) * px - f.y, (x + 0.5) * px - f.x) / RHO_STEP_UM
        inside = (t >= 0) & (t < obs.shape[0] - 1) & (r < rho.size - 1)
        t, r = np.broadcast_arrays(t, r)
        t, r = t[inside], r[inside]
        ti, ri = t.astype(int), r.astype(int)
        ft, fr = (t - ti).astype(np.float32), (r - ri).astype(np.float32)
        value = ((1 - ft) * ((1 - fr) * obs[ti, ri] + fr * obs[ti, ri + 1])
                 + ft * ((1 - fr) * obs[ti + 1, ri] + fr * obs[ti + 1, ri + 1]))
        sub = volume[k0 - lo[0]:k1 - lo[0], y0 - lo[1]:y1 - lo[1], x0 - lo[2]:x1 - lo[2]]
        sub[inside] += value
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), volume


def _render_wave(event: Event, geom: Geometry) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """A wave: at each pixel its bulk ΔF/F0 from the time the cascade arrives there (the mean
    firing time of the 3 nearest sites within 0.8 µm of the focal plane, if within 1.5 µm)."""
    from scipy.spatial import cKDTree

    near = [f for f in event.firings if abs(f.z) < 0.8]
    if len(near) < 3:
        return None
    xy = np.array([(f.y, f.x) for f in near])
    times = np.array([f.t0 for f in near])
    px, dt = geom.pixel_size_um, geom.frame_interval_ms
    yy, xx = np.mgrid[0:geom.height_px, 0:geom.width_px]
    pixels = np.column_stack([(yy.ravel() + 0.5) * px, (xx.ravel() + 0.5) * px])
    distance, index = cKDTree(xy).query(pixels, k=3)
    arrival = np.where(distance[:, 0] <= 1.5, times[index].mean(axis=1), np.nan).reshape(yy.shape)
    hit = np.isfinite(arrival)
    if not hit.any():
        return None
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    k0 = max(0, int(np.nanmin(arrival) // dt))
    k1 = min(geom.n_frames, int(np.nanmax(arrival) + event.bulk.size * SAVE_MS) // int(dt) + 1)
    if k1 <= k0:
        return None
    box = (slice(k0, k1), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    arr = arrival[box[1:]]
    k = np.arange(k0, k1)[:, None, None]
    y = np.arange(box[1].start, box[1].stop)[None, :, None]
    t = ((k + (y + 0.5) / geom.height_px) * dt - arr[None]) / SAVE_MS
    t = np.where(np.isfinite(t) & (t >= 0), t, -1.0)
    volume = np.interp(t, np.arange(event.bulk.size), event.bulk, left=0.0, right=0.0).astype(np.float32)
    return box, volume


def half_width(values: np.ndarray, at: int, step: float) -> float:
    """Full width at half of ``values[at]`` (linear interpolation between samples), in units of
    ``step``; NaN when the values do not fall to half on both sides (cut by an edge)."""
    half = values[at] / 2.0
    below = np.flatnonzero(values[:at] < half)
    above = np.flatnonzero(values[at + 1:] < half)
    if below.size == 0 or above.size == 0:
        return math.nan
    i, j = below[-1], at + 1 + above[0]
    left = i + (half - values[i]) / (values[i + 1] - values[i])
    right = j - 1 + (values[j - 1] - half) / (values[j - 1] - values[j])
    return float((right - left) * step)


def event_widths(volume: np.ndarray, geom: Geometry) -> tuple[float, float]:
    """A spark's or puff's noise-free FWHM (µm, along x through its peak voxel, in the peak frame)
    and FDHM (ms, its peak pixel over the frames): what ``casparks.measure`` should find."""
    k, y, x = np.unravel_index(int(np.argmax(volume)), volume.shape)
    return (half_width(volume[k, y, :], x, geom.pixel_size_um),
            half_width(volume[:, y, x], k, geom.frame_interval_ms))


def cell_band(y_um: np.ndarray | float, centre: float, half: float) -> np.ndarray | float:
    """The cell's dye fraction at ``y_um``: 1 inside the band ``centre`` ± ``half``, falling to 0
    over ~0.5 µm at its edges (the recording's resting fluorescence and its events scale with it)."""
    return 1.0 / (1.0 + np.exp((np.abs(y_um - centre) - half) / 0.5))


def centre_course(event: Event, band: float) -> dict[str, float]:
    """A spark's or puff's continuous course at its centre (the template's ρ = 0 at the site's
    depth, every SAVE_MS, × ``band``, the cell's dye fraction there): its peak ΔF/F0, FDHM and
    time from 10 % of the peak on the rise to the peak, what frames sample; NaN for waves."""
    if event.code == WAVE or len(event.firings) != 1:
        return {"course_peak_dff0": math.nan, "course_fdhm_ms": math.nan, "course_time_to_peak_ms": math.nan}
    f = event.firings[0]
    course = f.template.observed[min(int(round(abs(f.z) / 0.1)), DEPTHS_UM.size - 1), :, 0].astype(float)
    at = int(np.argmax(course))
    peak = float(course[at])
    below = np.flatnonzero(course[:at] < 0.1 * peak)
    rise_start = math.nan
    if below.size:  # the crossing of 10 % on the rise, interpolated
        i = below[-1]
        rise_start = i + (0.1 * peak - course[i]) / (course[i + 1] - course[i])
    return {"course_peak_dff0": peak * band, "course_fdhm_ms": half_width(course, at, SAVE_MS),
            "course_time_to_peak_ms": (at - rise_start) * SAVE_MS}


def wave_speed(event: Event) -> float:
    """A wave's speed (µm/s): the slope of its firings' distance along the cell (x) from the first
    site against their time, beyond 5 µm (where the front is flat); NaN for other events."""
    if event.code != WAVE:
        return math.nan
    first = event.firings[0]
    far = [(abs(f.x - first.x), f.t0) for f in event.firings if abs(f.x - first.x) > 5.0]
    if len(far) < 10:
        return math.nan
    distance, t = np.array(far).T
    return float(np.polyfit(t, distance, 1)[0] * 1000.0)


def voxel_noise_dff0(f0_photons: float, gain: float, read_adu: float) -> float:
    """Noise SD of one voxel in ΔF/F0 units at a resting count of ``f0_photons`` (Poisson + read)."""
    return math.sqrt(f0_photons + (read_adu / gain) ** 2) / f0_photons


def smoothed_peak(volume: np.ndarray, geom: Geometry) -> tuple[float, int]:
    """Peak of the event after the mean over ~0.6 µm × 0.6 µm × 20 ms an annotator's eye makes,
    and the number of voxels in that mean."""
    size = (max(1, 2 * int(round(10.0 / geom.frame_interval_ms)) + 1),) + (max(1, 2 * int(round(0.3 / geom.pixel_size_um)) + 1),) * 2
    return float(ndimage.uniform_filter(volume, size=size, mode="constant").max()), int(np.prod(size))


def simulate_movie(seed: int, kind: int, geom: Geometry, detector: dict | None = None) -> dict:
    """One movie and its truth: the recording (uint16), class and event labels, and the events table.

    ``kind``: what it holds, an index into ``KINDS`` (modulo its length).
    ``detector`` overrides drawn values (keys ``f0_photons``, ``gain``, ``read_photons``,
    ``offset_adu``, ``texture``) without changing the events: every value is drawn first.
    """
    rng = np.random.default_rng(seed)
    name, n_sparks, n_puffs, n_waves = KINDS[kind % len(KINDS)]
    t_ms = geom.n_frames * geom.frame_interval_ms
    width_um, height_um = geom.width_px * geom.pixel_size_um, geom.height_px * geom.pixel_size_um
    # the cell: a band along x, 15-22 µm wide, its centre near the field's
    centre = height_um / 2 + rng.uniform(-3.0, 3.0)
    half = rng.uniform(7.5, 11.0)
    sites = site_lattice(rng, width_um, (max(0.0, centre - half + 0.5), min(height_um, centre + half - 0.5)))
    local = (draw_sparks(rng, sites, int(rng.poisson(n_sparks)), t_ms)
             + draw_puffs(rng, sites, int(rng.integers(*n_puffs, endpoint=True)), t_ms))
    waves = draw_waves(rng, sites, n_waves, t_ms)
    wave_times: dict[int, list[float]] = {}
    for f in (f for wave in waves for f in wave.firings):
        wave_times.setdefault(f.site, []).append(f.t0)
    events = [e for e in local if not _refractory(e.firings[0], wave_times)] + waves

    f0_photons = math.exp(rng.uniform(math.log(4.0), math.log(25.0)))
    gain = math.exp(rng.uniform(math.log(1.0), math.log(20.0)))
    read_photons = rng.uniform(1.0, 8.0)
    offset = rng.uniform(50.0, 800.0)
    texture_sd = 0.15
    if detector:
        f0_photons = detector.get("f0_photons", f0_photons)
        gain = detector.get("gain", gain)
        read_photons = detector.get("read_photons", read_photons)
        offset = detector.get("offset_adu", offset)
        texture_sd = detector.get("texture", texture_sd)
    read = read_photons * gain
    noise = voxel_noise_dff0(f0_photons, gain, read)

    shape = (geom.n_frames, geom.height_px, geom.width_px)
    dff0 = np.zeros(shape, dtype=np.float32)
    best = np.zeros(shape, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.int32)
    rows = []
    # the cell's dye fraction per row: the recording scales each event by it (its truth too)
    y = (np.arange(geom.height_px) + 0.5) * geom.pixel_size_um
    band = cell_band(y, centre, half)
    for number, event in enumerate(events, start=1):
        rendered = render_event(event, geom)
        f = event.firings[0]
        row = {"event": number, "class": {SPARK: "spark", WAVE: "wave", PUFF: "puff"}[event.code],
               "start_ms": min(g.t0 for g in event.firings), "x_um": f.x, "y_um": f.y, "depth_um": abs(f.z),
               "current_pA": event.current_pa, "release_ms": event.release_ms, "sites": len(event.firings)}
        if rendered is None:
            rows.append(dict(row, peak_dff0=0.0, snr=0.0, labelled=False, reason="outside"))
            continue
        box, volume = rendered
        dff0[box] += volume
        peak = float(volume.max())
        smooth, n_mean = smoothed_peak(volume, geom)
        snr = smooth / (noise / math.sqrt(n_mean))
        mask = volume >= max(LABEL_FLOOR, LABEL_FRACTION * peak)
        take = mask & (volume > best[box])
        owner[box][take] = number if snr >= VISIBILITY_SNR else -number
        best[box][take] = volume[take]
        fwhm, fdhm = (math.nan, math.nan) if event.code == WAVE else event_widths(volume, geom)
        # peak_dff0 as the recording shows it, dimmed where the event reaches the band's edge (it read
        # up to 1.3 times the movie's own peak there); labels keep the event's undimmed extent
        seen = float((volume * band[box[1]][None, :, None]).max())
        rows.append(dict(row, peak_dff0=seen, fwhm_um=fwhm, fdhm_ms=fdhm,
                         **centre_course(event, float(cell_band(f.y, centre, half))),
                         speed_um_per_s=wave_speed(event), snr=snr,
                         labelled=bool(snr >= VISIBILITY_SNR and mask.any()),
                         reason="" if snr >= VISIBILITY_SNR else "faint"))
    table = pd.DataFrame(rows)
    class_label, event_label, table = _labels(owner, events, table)

    # the recording: resting fluorescence of the cell band, bleaching, photons, detector
    texture = ndimage.gaussian_filter(rng.normal(size=shape[1:]), 2.0 / geom.pixel_size_um)
    texture *= texture_sd / max(texture.std(), 1e-9)
    f0 = f0_photons * (0.08 + 0.92 * band[:, None]) * (1.0 + texture)
    bleach = np.exp(-np.arange(geom.n_frames) * geom.frame_interval_ms / rng.uniform(5e3, 4e4))
    movie = np.empty(shape, dtype=np.uint16)
    for k in range(geom.n_frames):
        photons = rng.poisson(np.maximum(f0 * bleach[k] * (1.0 + dff0[k] * band[:, None]), 0.0))
        adu = gain * photons + offset + rng.normal(0.0, read, size=photons.shape)
        movie[k] = np.clip(np.rint(adu), 0, 65535)
    info = {"kind": name, "f0_photons": f0_photons, "gain": gain, "read_adu": read, "offset_adu": offset,
            "noise_dff0": noise}
    return {"movie": movie, "class_label": class_label, "event_label": event_label, "events": table, "info": info}


def _labels(owner: np.ndarray, events: list[Event], table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Class and event labels from the owner volume (event number, negative: too faint to see).
    Each event keeps its largest 26-connected piece; cut-off pieces and faint events are ignore."""
    class_label = np.where(owner != 0, IGNORE, BACKGROUND).astype(np.uint8)
    event_label = np.zeros(owner.shape, dtype=np.uint16)
    ids = np.full(len(events) + 1, -1)
    next_id = 1
    spans = ndimage.find_objects(np.maximum(owner, 0))
    for number, span in enumerate(spans, start=1):
        if span is None:
            continue
        piece, n = ndimage.label(owner[span] == number, structure=np.ones((3, 3, 3)))
        if n == 0:
            continue
        largest = piece == (np.argmax(np.bincount(piece.ravel())[1:]) + 1)
        class_label[span][largest] = events[number - 1].code
        event_label[span][largest] = next_id
        ids[number] = next_id
        next_id += 1
    table["event_id"] = [int(ids[n]) for n in table["event"]]
    table["labelled"] = table["event_id"] > 0
    table.loc[table["labelled"] & (table["reason"] != ""), "reason"] = ""
    return class_label, event_label, table


# --- 5. files -------------------------------------------------------------------------------------


def write_sample(folder: Path, number: int, sample: dict, geom: Geometry) -> None:
    """``NN_video.tif``, ``NN_class_label.tif``, ``NN_event_label.tif`` and ``NN_events.csv``
    (atomic; the units in the TIFFs' ImageJ metadata)."""
    from casparks.io import Movie, write_class_label, write_csv, write_event_label, write_movie

    stem = folder / f"{number:02d}"
    units = (geom.pixel_size_um, geom.frame_interval_ms)
    write_movie(f"{stem}_video.tif", Movie(sample["movie"], *units))
    write_class_label(f"{stem}_class_label.tif", sample["class_label"], *units)
    write_event_label(f"{stem}_event_label.tif", sample["event_label"], *units)
    table = sample["events"].assign(**{k: v for k, v in sample["info"].items()})
    write_csv(f"{stem}_events.csv", table)


DETECTOR_KEYS = ("f0_photons", "gain", "read_photons", "offset_adu", "texture")


def _one(args: tuple[Path, int, int, int, Geometry, dict]) -> str:
    folder, number, seed, kind, geom, detector = args
    sample = simulate_movie(seed, kind, geom, detector or None)
    write_sample(folder, number, sample, geom)
    table = sample["events"]
    counts = ", ".join(f"{int(table[(table['class'] == c) & table['labelled']].shape[0])} {c}s" for c in ("spark", "puff", "wave"))
    return f"{number:02d} ({sample['info']['kind']}, {geom.pixel_size_um} µm / {geom.frame_interval_ms} ms): {counts}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder for the movies and their truth")
    parser.add_argument("--movies", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1000, help="movie i uses seed + i")
    parser.add_argument("--geometry", choices=sorted(GEOMETRIES), default="reference",
                        help="reference: 0.2 µm / 6.8 ms, 500 × 64 × 512; other: 0.3, 0.25, 0.15, 0.1 µm in turn; "
                             "fine: 1 ms frames and 0.05 µm pixels in turn")
    parser.add_argument("--kinds", nargs="+", choices=sorted({k[0] for k in KINDS}), default=["sparks", "puffs", "waves"],
                        help="what the movies hold, in turn (default: sparks, sparks, puffs, waves)")
    parser.add_argument("--detector", nargs="+", default=[], metavar="KEY=VALUE",
                        help="fixed detector values instead of drawn ones, the events unchanged: "
                             "f0_photons, gain, read_photons, offset_adu, texture (e.g. texture=0)")
    parser.add_argument("--ids", nargs="+", type=int, help="make only these movies of the set (1-based)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    detector = {}
    for item in args.detector:
        key, _, value = item.partition("=")
        try:
            if key not in DETECTOR_KEYS:
                raise ValueError
            detector[key] = float(value)
        except ValueError:
            sys.exit(f"error: --detector {item}: give KEY=VALUE, a number for KEY one of {', '.join(DETECTOR_KEYS)}")
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"error: {args.out}: the folder is not empty; give a new one")
    args.out.mkdir(parents=True, exist_ok=True)
    geoms = GEOMETRIES[args.geometry]
    kinds = [k for k, spec in enumerate(KINDS) if spec[0] in args.kinds]
    jobs = [(args.out, i + 1, args.seed + i, kinds[i % len(kinds)], geoms[_sampling_index(i, len(kinds), len(geoms))],
             detector)
            for i in range(args.movies) if not args.ids or i + 1 in args.ids]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            lines = list(pool.map(_one, jobs))
    else:
        lines = [_one(job) for job in jobs]
    print("\n".join(lines))
    return 0


def _sampling_index(i: int, n_kinds: int, n_geometries: int) -> int:
    """Movie ``i``'s sampling: kinds cycle fastest, and the sampling moves one more step per
    round of kinds, so that every kind meets every sampling whatever the number of kinds (a
    puffs-only set at ``--geometry other`` gets all four samplings, not two)."""
    return (i % n_kinds + i // n_kinds) % n_geometries


if __name__ == "__main__":
    raise SystemExit(main())
