"""From a 1 mm label volume to class fractions on the MRBrainS18 grid, through a slice profile.

Geometry. A source volume is first reoriented to RAS (array axes along +x right, +y anterior,
+z superior; any orientation a NIfTI affine describes, FreeSurfer's LIA included). The target is
the MRBrainS18 grid: 240 x 240 x 48 voxels of 0.958 x 0.958 x 3.0 mm, nibabel (x, y, z) order,
an axis-aligned RAS affine centred on (0, 0, 0) mm (``synthetic.grid_affine``, the same as the
MNI demo cohort's). A rigid ``pose`` (4 x 4, target mm -> source mm) places the head in it.

Slice profile. A 2-D multi-slice acquisition (MRBrainS18's FLAIR and T1-IR) integrates signal
over its 3 mm slice thickness. Each target voxel is therefore sampled at
``len(SLICE_OFFSETS)`` points along its slice normal (nearest neighbour in the 1 mm source)
and the samples are weighted by ``SLICE_WEIGHTS``: the trapezoid rule over a rectangular 3 mm
profile (our choice; real profiles are smoother, which the in-plane blur of the contrast model
does not change). The weighted counts of each class are its volume fraction in the voxel:
partial volume for the images, and the class with the largest fraction is the voxel's label
(majority, ties to the lower class index).
"""

from __future__ import annotations

import numpy as np

SLICE_OFFSETS: tuple[float, ...] = (-0.5, -1 / 3, -1 / 6, 0.0, 1 / 6, 1 / 3, 0.5)
"""Sample positions along the slice normal, in slice thicknesses from the voxel centre (every
0.5 mm of a 3 mm slice, both faces included)."""
SLICE_WEIGHTS: tuple[int, ...] = (1, 2, 2, 2, 2, 2, 1)
"""Trapezoid-rule weights of those samples (integers; their sum is the count of a pure voxel)."""


def reorient_to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip / permute a 3-D array so that its axes run along +R, +A, +S.

    Args:
        data: (I, J, K) array in the file's voxel order.
        affine: (4, 4) voxel -> RAS mm.
    Returns:
        The reoriented array (a view where possible) and its (4, 4) voxel -> RAS mm affine; the
        world position of every voxel is unchanged.
    """
    import nibabel as nib

    current = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt("RAS"))
    ras = nib.orientations.apply_orientation(data, transform)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    return ras, ras_affine


def rigid_pose(
    rotation_deg: tuple[float, float, float],
    translation_mm: tuple[float, float, float],
    centre_mm: np.ndarray,
) -> np.ndarray:
    """(4, 4) target mm -> source mm: rotate about the target origin, then move it to the head.

    ``centre_mm`` (source RAS mm) lands on the target grid's centre, shifted by
    ``translation_mm``; ``rotation_deg`` are rotations about the x, y, z axes (degrees).
    """
    rx, ry, rz = np.deg2rad(rotation_deg)
    rot_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    rot_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    rot_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, :3] = rot_z @ rot_y @ rot_x
    pose[:3, 3] = np.asarray(centre_mm, dtype=float) + np.asarray(translation_mm, dtype=float)
    return pose


def grid_to_source_voxels(
    source_affine: np.ndarray, pose: np.ndarray, target_affine: np.ndarray
) -> np.ndarray:
    """(4, 4) target voxel (x, y, z) -> source voxel (i, j, k)."""
    return np.linalg.inv(source_affine) @ pose @ target_affine


def slice_profile_counts(
    classes: np.ndarray,
    grid_to_source: np.ndarray,
    shape: tuple[int, int, int],
    num_classes: int,
    outside: int = 0,
) -> np.ndarray:
    """Weighted class counts of every target voxel along its slice profile.

    Args:
        classes: (I, J, K) uint8 class index per source voxel (< ``num_classes``).
        grid_to_source: (4, 4) target voxel -> source voxel (:func:`grid_to_source_voxels`).
        shape: target grid (X, Y, Z), voxels.
        num_classes: number of class indices.
        outside: class of points outside the source volume.
    Returns:
        (num_classes, X, Y, Z) uint8 counts; each voxel's counts sum to ``sum(SLICE_WEIGHTS)``.
    """
    from scipy import ndimage

    m = grid_to_source.astype(np.float64)
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    centres = np.empty((3, *shape), dtype=np.float32)
    for row in range(3):
        centres[row] = (
            np.float32(m[row, 0]) * axes[0][:, None, None]
            + np.float32(m[row, 1]) * axes[1][None, :, None]
            + np.float32(m[row, 2]) * axes[2][None, None, :]
            + np.float32(m[row, 3])
        )
    source = np.ascontiguousarray(classes, dtype=np.uint8)
    counts = np.zeros((num_classes, *shape), dtype=np.uint8)
    sampled = np.empty(shape, dtype=np.uint8)
    for offset, weight in zip(SLICE_OFFSETS, SLICE_WEIGHTS, strict=True):
        step = (m[:3, 2] * offset).astype(np.float32)  # target voxel units along z
        ndimage.map_coordinates(
            source,
            centres + step[:, None, None, None],
            output=sampled,
            order=0,
            mode="constant",
            cval=outside,
            prefilter=False,
        )
        for index in np.unique(sampled):
            counts[index][sampled == index] += np.uint8(weight)
    return counts


def majority(counts: np.ndarray) -> np.ndarray:
    """(K, X, Y, Z) counts or fractions -> (X, Y, Z) uint8 index of the largest (ties: lowest)."""
    return np.argmax(counts, axis=0).astype(np.uint8)
