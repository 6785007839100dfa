"""Synthetic MR contrasts from tissue fractions: per-tissue intensities and a scanner profile.

An image is ``sum_k fraction_k * mean_k`` (partial volume: a voxel half cortex, half CSF gets
the average of both), times ``1 + texture``, blurred in-plane by the point-spread function,
times a smooth bias field, with Rician noise. ``mean_k`` comes from the modality's nominal
relative intensity of tissue k (:data:`NOMINAL_MEANS`, white matter of T1 = 1), raised to the
subject's contrast exponent and multiplied by a per-subject, per-tissue jitter drawn from
``N(1, TISSUE_SPREAD)`` (real scans of the same sequence differ in relaxation times, coil and
protocol details). Intensities are whole numbers with the brightest brain tissue near
``1000 * gain`` (a.u.), as scanner output usually is.

The nominal means are our reading of typical 3 T contrasts (sources: textbook relaxation times
at 3 T; the look of the MRBrainS18 images described in their paper), not a fit to any data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MachineUnlearningLib.data.freesurfer_labels import TISSUES

_T1 = {"air": 0.0, "csf": 0.25, "cortex": 0.58, "medial_temporal": 0.60, "thalamus": 0.80,
       "striatum": 0.70, "pallidum": 0.85, "deep_grey": 0.68, "vessel": 0.35, "wm": 1.00,
       "ventral_dc": 0.86, "lesion": 0.68, "infarct": 0.32, "cerebellar_cortex": 0.60,
       "cerebellar_wm": 0.95, "brain_stem": 0.88, "skin": 0.75, "muscle": 0.45, "bone": 0.10,
       "fat": 0.95, "eye": 0.22, "dura": 0.25, "cord": 0.85}  # fmt: skip
# T1 inversion recovery (TI 400 ms): CSF nulled, strong grey/white contrast.
_IR = {"air": 0.0, "csf": 0.03, "cortex": 0.40, "medial_temporal": 0.42, "thalamus": 0.72,
       "striatum": 0.55, "pallidum": 0.80, "deep_grey": 0.52, "vessel": 0.10, "wm": 1.00,
       "ventral_dc": 0.80, "lesion": 0.50, "infarct": 0.08, "cerebellar_cortex": 0.42,
       "cerebellar_wm": 0.92, "brain_stem": 0.85, "skin": 0.60, "muscle": 0.30, "bone": 0.04,
       "fat": 0.85, "eye": 0.03, "dura": 0.10, "cord": 0.80}  # fmt: skip
# T2-FLAIR: fluid suppressed, grey above white, lesions bright, chronic infarct dark.
_FLAIR = {"air": 0.0, "csf": 0.10, "cortex": 0.80, "medial_temporal": 0.88, "thalamus": 0.70,
          "striatum": 0.74, "pallidum": 0.62, "deep_grey": 0.76, "vessel": 0.20, "wm": 0.62,
          "ventral_dc": 0.66, "lesion": 1.45, "infarct": 0.35, "cerebellar_cortex": 0.78,
          "cerebellar_wm": 0.64, "brain_stem": 0.70, "skin": 0.55, "muscle": 0.40, "bone": 0.06,
          "fat": 0.70, "eye": 0.12, "dura": 0.30, "cord": 0.68}  # fmt: skip
NOMINAL_MEANS: dict[str, dict[str, float]] = {"reg_T1": _T1, "reg_IR": _IR, "FLAIR": _FLAIR}
"""Modality -> tissue -> nominal relative mean intensity."""

TISSUE_SPREAD: dict[str, float] = {
    **{t: 0.04 for t in TISSUES},
    **{t: 0.10 for t in ("lesion", "infarct", "vessel")},
    **{t: 0.12 for t in ("skin", "muscle", "bone", "fat", "eye", "dura", "cord")},
}
"""Between-subject relative SD of each tissue's mean (brain tissue 4 %, pathology 10 %, head
tissue 12 %: coils and fat suppression vary most outside the brain)."""

PSF_SIGMA_VOXELS: tuple[float, float, float] = (0.5, 0.5, 0.0)
"""In-plane Gaussian point-spread function, voxels (through-plane: the slice profile)."""
BIAS_CONTROL_POINTS: tuple[int, int, int] = (3, 3, 3)
"""Control points of the bias field along (x, y, z): one smooth bump per third of the grid."""


@dataclass(frozen=True)
class ContrastProfile:
    """How one modality of one subject was acquired.

    Attributes:
        modality: ``reg_T1``, ``reg_IR`` or ``FLAIR``.
        gain: the brightest brain tissue sits near ``1000 * gain`` (a.u.).
        contrast: exponent applied to the nominal relative means (1 = nominal contrast).
        tissue_jitter: multiplicative jitter per tissue, in ``TISSUES`` order.
        bias_strength: SD of the log bias field (0.1 = about +-10 %).
        noise: Rician noise sigma as a fraction of the brightest brain tissue's mean.
    """

    modality: str
    gain: float
    contrast: float
    tissue_jitter: tuple[float, ...]
    bias_strength: float
    noise: float

    def tissue_means(self) -> np.ndarray:
        """(len(TISSUES),) float32 mean intensity of each tissue (a.u.)."""
        nominal = NOMINAL_MEANS[self.modality]
        relative = np.array(
            [
                (nominal[t] ** self.contrast) * j
                for t, j in zip(TISSUES, self.tissue_jitter, strict=True)
            ]
        )
        # the brighter of cortex and white matter sets the scale (FLAIR lesions go above it)
        reference = max(relative[TISSUES.index("cortex")], relative[TISSUES.index("wm")])
        return (relative * (1000.0 * self.gain / reference)).astype(np.float32)


def draw_profile(rng: np.random.Generator, modality: str) -> ContrastProfile:
    """A random acquisition of ``modality`` (ranges: a few 3 T scanners and protocols)."""
    jitter = [float(np.clip(rng.normal(1.0, TISSUE_SPREAD[t]), 0.6, 1.4)) for t in TISSUES]
    return ContrastProfile(
        modality=modality,
        gain=float(rng.uniform(0.8, 1.25)),
        contrast=float(rng.uniform(0.88, 1.12)),
        tissue_jitter=tuple(jitter),
        bias_strength=float(rng.uniform(0.04, 0.15)),
        noise=float(rng.uniform(0.015, 0.04)),
    )


def render(
    fractions: np.ndarray,
    compartment_tissue: np.ndarray,
    profile: ContrastProfile,
    texture: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One contrast.

    Args:
        fractions: (K, X, Y, Z) float32 volume fraction of each compartment (sums to 1).
        compartment_tissue: (K,) index into ``TISSUES`` of each compartment.
        profile: the acquisition.
        texture: (X, Y, Z) float32 relative within-tissue variation (e.g. 0.03 * unit field).
        rng: the noise stream (advanced here).
    Returns:
        (X, Y, Z) float32 whole numbers >= 0.
    """
    from scipy import ndimage

    means = profile.tissue_means()[compartment_tissue]
    image = np.zeros(fractions.shape[1:], dtype=np.float32)
    for k, mean in enumerate(means):
        if mean > 0:
            image += fractions[k] * mean
    image *= 1.0 + texture
    image = ndimage.gaussian_filter(image, sigma=PSF_SIGMA_VOXELS, truncate=3.0)
    image *= np.exp(profile.bias_strength * smooth_field(rng, image.shape, BIAS_CONTROL_POINTS))
    sigma = np.float32(profile.noise * 1000.0 * profile.gain)
    return rician(image, sigma, rng)


def rician(image: np.ndarray, sigma: np.float32, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``image`` plus complex Gaussian noise of SD ``sigma``, rounded (float32)."""
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.round(np.sqrt(real * real + imaginary * imaginary)).astype(np.float32)


def texture_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    voxel_size_mm: tuple[float, float, float],
    correlation_mm: float = 1.5,
) -> np.ndarray:
    """(X, Y, Z) float32 zero-mean unit-SD noise, correlated over about ``correlation_mm``."""
    from scipy import ndimage

    noise = rng.standard_normal(shape, dtype=np.float32)
    sigma = tuple(min(correlation_mm / v, 3.0) for v in voxel_size_mm)
    field = ndimage.gaussian_filter(noise, sigma=sigma, truncate=2.5)
    return field / np.float32(field.std() + 1e-12)


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], n_control: tuple[int, int, int]
) -> np.ndarray:
    """(X, Y, Z) float32 smooth zero-mean unit-SD field from Gaussian bumps on a coarse grid.

    ``n_control`` bumps per axis, each as wide as the spacing between them, with N(0, 1)
    weights: the field varies over about ``shape / n_control`` voxels.
    """
    coarse = rng.standard_normal(n_control).astype(np.float32)
    bases = []
    for n, m in zip(shape, n_control, strict=True):
        centres = np.linspace(0.0, n - 1.0, m)
        width = (n - 1.0) / max(m - 1, 1)
        basis = np.exp(-(((np.arange(n)[:, None] - centres[None, :]) / width) ** 2))
        bases.append(basis.astype(np.float32))  # (n, m)
    field = np.einsum("xi,ijk->xjk", bases[0], coarse)  # (X, m2, m3)
    field = np.einsum("yj,xjk->xyk", bases[1], field)  # (X, Y, m3)
    field = field @ bases[2].T  # (X, Y, Z): one matrix product, the bulk of the work
    field -= field.mean()
    field /= field.std() + np.float32(1e-12)
    return field
