"""White-matter lesions (label 4) and an infarct (label 9) drawn into compartment fractions.

Both work on the target grid's (K, X, Y, Z) fractions (data/resampling.py) in mm, so a lesion
is as large on a 3 mm slice grid as on a fine one; their soft edges are the partial volume.

- Lesions convert white matter only (the ``(3, "wm")`` compartment), so they always lie inside
  it. A subject's ``load`` in [0, 1] sets their number and size: none below
  ``NO_LESION_LOAD``, then up to ``MAX_LESIONS`` blobs whose typical radius grows from 1.5 to
  5.5 mm; ``PERIVENTRICULAR_SHARE`` of them sit within ``PERIVENTRICULAR_MM`` of a ventricle,
  where white-matter lesions of small-vessel disease cluster, so heavy loads become confluent
  periventricular caps.
- An infarct converts every brain-tissue compartment (labels 1-4) of an ellipsoid of 5-12 mm
  semi-axes centred on cortex, cortico-subcortical as territorial infarcts are.
"""

from __future__ import annotations

import numpy as np

NO_LESION_LOAD = 0.15
"""Loads below this get no drawn lesion (the map's own lesion labels stay)."""
MAX_LESIONS = 40
"""Number of blobs at load 1."""
PERIVENTRICULAR_SHARE = 0.65
PERIVENTRICULAR_MM = 8.0
EDGE_MM = 0.6
"""Width of the soft blob edge (logistic scale), mm."""


def lesion_count(load: float) -> int:
    """Blobs drawn at a load in [0, 1]: 0 below ``NO_LESION_LOAD``, then 2 .. MAX_LESIONS."""
    if load < NO_LESION_LOAD:
        return 0
    return int(round(2 + (MAX_LESIONS - 2) * load**2))


def add_lesions(
    fractions: np.ndarray,
    compartments: tuple[tuple[int, str], ...],
    load: float,
    rng: np.random.Generator,
    voxel_size_mm: tuple[float, float, float],
) -> int:
    """Move white matter into the lesion compartment, in place; returns the blobs drawn.

    Args:
        fractions: (K, X, Y, Z) float32 compartment fractions (changed in place).
        compartments: the (label, tissue) pair of each of the K compartments.
        load: lesion load in [0, 1].
        rng: random stream (advanced).
        voxel_size_mm: (x, y, z) voxel size, mm.
    """
    from scipy import ndimage

    count = lesion_count(load)
    if count == 0:
        return 0
    wm, lesion = compartments.index((3, "wm")), compartments.index((4, "lesion"))
    deep = np.flatnonzero(fractions[wm] >= 0.95)
    if deep.size == 0:
        return 0
    ventricles = sum(fractions[k] for k, (label, _) in enumerate(compartments) if label == 6)
    near = ndimage.distance_transform_edt(ventricles < 0.5, sampling=voxel_size_mm)
    periventricular = deep[near.ravel()[deep] <= PERIVENTRICULAR_MM]
    field = np.zeros(fractions.shape[1:], dtype=np.float32)
    typical_mm = 1.5 + 4.0 * load
    for _ in range(count):
        pool = (
            periventricular
            if periventricular.size and rng.uniform() < PERIVENTRICULAR_SHARE
            else deep
        )
        centre = np.unravel_index(pool[rng.integers(pool.size)], field.shape)
        in_plane = float(np.clip(typical_mm * np.exp(rng.normal(0.0, 0.35)), 1.0, 10.0))
        radii = tuple(in_plane * rng.uniform([0.7, 0.7, 0.6], [1.3, 1.3, 1.2]))
        _blob(field, centre, radii, voxel_size_mm)
    moved = field * fractions[wm]
    fractions[wm] -= moved
    fractions[lesion] += moved
    return count


def add_infarct(
    fractions: np.ndarray,
    compartments: tuple[tuple[int, str], ...],
    rng: np.random.Generator,
    voxel_size_mm: tuple[float, float, float],
) -> bool:
    """Move the brain tissue of one ellipsoid into the infarct compartment, in place.

    Returns False (nothing changed) when the grid holds no cortex voxel.
    """
    cortex = compartments.index((1, "cortex"))
    infarct = compartments.index((9, "infarct"))
    mask = fractions[cortex] >= 0.9
    slices = mask.shape[2]  # keep the infarct off the top and bottom quarter of the slab
    mask[:, :, : slices // 4] = False
    mask[:, :, 3 * slices // 4 :] = False
    candidates = np.flatnonzero(mask)
    if candidates.size == 0:
        return False
    centre = np.unravel_index(candidates[rng.integers(candidates.size)], mask.shape)
    field = np.zeros(mask.shape, dtype=np.float32)
    _blob(field, centre, tuple(rng.uniform(5.0, 12.0, 3)), voxel_size_mm)
    for k, (label, _) in enumerate(compartments):
        if label in (1, 2, 3, 4):
            moved = field * fractions[k]
            fractions[k] -= moved
            fractions[infarct] += moved
    return True


def _blob(
    field: np.ndarray,
    centre: tuple[int, int, int],
    radii_mm: tuple[float, float, float],
    voxel_size_mm: tuple[float, float, float],
) -> None:
    """``field = max(field, soft ellipsoid)`` around a voxel, computed in its bounding box only."""
    reach = [
        int(np.ceil((r + 4 * EDGE_MM) / v)) + 1
        for r, v in zip(radii_mm, voxel_size_mm, strict=True)
    ]
    box = tuple(
        slice(max(c - n, 0), min(c + n + 1, size))
        for c, n, size in zip(centre, reach, field.shape, strict=True)
    )
    axes = [
        (np.arange(b.start, b.stop) - c) * v / r
        for b, c, v, r in zip(box, centre, voxel_size_mm, radii_mm, strict=True)
    ]
    q = np.sqrt(
        axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    )
    edge = 1.0 / (1.0 + np.exp((q - 1.0) * min(radii_mm) / EDGE_MM))
    field[box] = np.maximum(field[box], edge.astype(np.float32))
