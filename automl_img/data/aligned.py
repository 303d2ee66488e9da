"""Copies that a crop or a shift hides from the hash: each image is aligned onto the images that look most like it,
and the aligned pair is compared by the same hash.

A crop of a few percent moves every frequency of the hash a little and many of its bits with them. Aligning undoes
it: OpenCV's ECC (Evangelidis & Psarakis 2008) finds the affine warp that best maps one image onto the other at
``ALIGN_SIZE`` px, and the warped image is hashed again. Only the images nearest by a blurred 16 px thumbnail (kept
with each image's facts) are aligned: each val or test image onto its ``CANDIDATES`` nearest training images (on
fashion-mnist-6k with planted copies, the source was among them for every re-encoded, resized or brightened copy and
96 % of cropped ones), and every image onto its ``NEIGHBOURS`` nearest in its own part (the whole folder where it
has no parts): duplicates and label conflicts made by a crop. Each pair within a part is tried both ways (the
original warped onto the crop fits better than the crop onto the original). Aligning every pair would cost
thousands of times as much.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from automl_img.data.decode import UnreadableImage, read_image

ALIGN_SIZE = 64  # px a side at which images are aligned
CANDIDATES = 10  # training images aligned onto each val or test image
NEIGHBOURS = 3  # images of its own part aligned onto each image (both ways round for a pair: two chances)
CANDIDATE_BLUR = 1.0  # px of the 16 px thumbnail: crops' sources were among the 10 nearest for 96 %, not 90 %
QUERY_BLOCK = 256  # images whose candidates are found, decoded and aligned at a time
MAX_WARP = 0.15  # the most a copy's warp may scale, shear or shift (as a share of the side)
_ECC_STOP = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-5)
_ECC_BLUR = 5  # px: ECC smooths both images so that it converges from further away

BitsApart = Callable[[np.ndarray, np.ndarray], int]


def aligned_pairs(
    paths: list[Path],
    parts: list[str] | None,
    thumbnails: np.ndarray,
    found: set[frozenset[int]],
    max_bits: int,
    bits_apart: BitsApart,
) -> list[tuple[int, int, int]]:
    """``(first, second, bits)`` for each pair not in ``found`` (the hash's pairs) whose hashes are within
    ``max_bits`` once aligned: each val or test image not yet paired with a training image, onto its CANDIDATES
    nearest training images (leaks), and each image onto its NEIGHBOURS nearest in its part (``parts`` None: one
    part). ``paths``, ``parts`` and ``thumbnails`` (16 x 16 grayscale, one row per image) are in the same order;
    ``bits_apart`` compares two grayscale images."""
    parts = parts or ["all"] * len(paths)
    descriptors = _descriptors(thumbnails)
    train = np.array([row for row, part in enumerate(parts) if part == "train"], dtype=np.int64)
    leaked = {row for pair in found for row in pair if len({parts[r] for r in pair}) > 1}
    searches = [([row for row, part in enumerate(parts) if part != "train" and row not in leaked], train, CANDIDATES)]
    for name in sorted(set(parts)):
        rows = np.array([row for row, part in enumerate(parts) if part == name], dtype=np.int64)
        searches.append((rows.tolist(), rows, min(NEIGHBOURS, len(rows) - 1)))  # never itself
    best: dict[frozenset[int], tuple[int, int, int]] = {}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for queries, candidates, count in searches:
            for row, query, bits in _nearest_aligned(paths, descriptors, queries, candidates, count, bits_apart, pool):
                key = frozenset((row, query))
                if bits <= max_bits and key not in found and bits < best.get(key, (0, 0, max_bits + 1))[2]:
                    best[key] = (row, query, bits)
    return sorted(best.values())


def _nearest_aligned(
    paths: list[Path],
    descriptors: np.ndarray,
    queries: list[int],
    candidates: np.ndarray,
    count: int,
    bits_apart: BitsApart,
    pool: ThreadPoolExecutor,
) -> Iterator[tuple[int, int, int]]:
    """``(candidate, query, bits)``: each query's best of its ``count`` nearest candidates (not itself) once aligned."""
    count = min(count, len(candidates))
    if count < 1 or not queries:
        return
    for start in range(0, len(queries), QUERY_BLOCK):
        block = queries[start : start + QUERY_BLOCK]
        similarity = descriptors[block] @ descriptors[candidates].T
        similarity[np.asarray(block)[:, None] == candidates[None, :]] = -np.inf  # not itself
        nearest = candidates[np.argpartition(-similarity, count - 1, axis=1)[:, :count]]
        needed = sorted({*block, *nearest.ravel().tolist()})
        small = dict(zip(needed, pool.map(lambda row: _gray(paths[row]), needed)))
        jobs = [(small[query], [(row, small[row]) for row in rows]) for query, rows in zip(block, nearest)]
        for query, (bits, row) in zip(block, pool.map(lambda job: _best(job[0], job[1], bits_apart), jobs)):
            yield row, query, bits


def _best(
    query: np.ndarray | None,
    candidates: list[tuple[int, np.ndarray | None]],
    bits_apart: BitsApart,
) -> tuple[int, int]:
    """``(bits, row)`` of the candidate closest to ``query`` once aligned onto it."""
    return min((_aligned_bits(query, image, bits_apart), int(row)) for row, image in candidates)


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """What candidates are chosen by: the image at 16 x 16 grayscale pixels, each the mean of its area."""
    return cv2.resize(gray, (16, 16), interpolation=cv2.INTER_AREA)


def _descriptors(thumbnails: np.ndarray) -> np.ndarray:
    """Rows of unit length, each thumbnail blurred a little (a crop shifts it by a pixel or so) less its mean: a
    dot product is their correlation."""
    blurred = [cv2.GaussianBlur(small.astype(np.float32), (0, 0), CANDIDATE_BLUR) for small in thumbnails]
    rows = np.stack(blurred).reshape(len(thumbnails), -1) if blurred else np.zeros((0, 256), np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-6)


def _gray(path: Path) -> np.ndarray | None:
    try:
        image = read_image(path)
    except UnreadableImage:
        return None  # changed since the hash was taken; the next audit reports it
    gray = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (ALIGN_SIZE, ALIGN_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)


def _aligned_bits(template: np.ndarray | None, moving: np.ndarray | None, bits_apart: BitsApart) -> int:
    """Bits between the hashes of ``template`` and ``moving`` warped onto it (a large number when ECC fails)."""
    if template is None or moving is None:
        return 1 << 16
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(  # type: ignore[call-overload]  # OpenCV's stubs want a mask here
            template, moving, warp, cv2.MOTION_AFFINE, _ECC_STOP, None, _ECC_BLUR
        )
    except cv2.error:  # did not converge: not a copy that a small warp explains
        return 1 << 16
    if np.abs(warp[:, :2] - np.eye(2)).max() > MAX_WARP or np.abs(warp[:, 2]).max() > MAX_WARP * ALIGN_SIZE:
        return 1 << 16  # a crop or resize of a few percent is a small warp; a large one fits a look-alike
    warped = cv2.warpAffine(
        moving,
        warp,
        (ALIGN_SIZE, ALIGN_SIZE),
        flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return bits_apart(template, warped)
