"""`automl-img audit`: what is wrong with a folder before a search trains on it.

Copies of one image (re-saved, resized, brightened) are found by a perceptual hash: the signs of the lowest
12x12 frequencies of the image's discrete cosine transform at 32 px, against their median (pHash, Zauner 2010,
with more than twice the usual 64 bits: on Fashion-MNIST with planted copies those could not tell copies from the
many look-alike products), 144 bits per image. Two images whose hashes differ in at most ``NEAR_DUPLICATE_BITS``
bits are copies. Crops move too many bits: images are also aligned onto their nearest look-alikes (val and test
images onto training images, and every image within its own part) and hashed again (``aligned``). A pair in one
class is a duplicate, in two classes a label conflict (one image, two labels), and in two parts of a pre-split
folder a leak (a test score that has seen its image). Then the odd ones: unreadable files (the list the search's
skip report uses), near-uniform images, sizes and shapes far from the rest, a few colour images among grayscale
ones, and the class balance.

All pairs are compared, a block of rows at a time: memory stays at about 11 x ``BLOCK`` x images bytes whatever the
folder's size (280 MB for 100,000 images), and the time grows with the square of the images (64-bit XOR and
popcount, fast in numpy).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from automl_img.data.aligned import ALIGN_SIZE, CANDIDATES, NEIGHBOURS, aligned_pairs, thumbnail
from automl_img.data.audit_cache import AuditCache, ImageFacts
from automl_img.data.decode import UnreadableImage, read_image
from automl_img.data.imageset import ImageSet
from automl_img.native_output import native_stderr_muted

HASH_SIZE = 32  # the image is shrunk to this many pixels a side before its transform
HASH_FREQUENCIES = 12  # the lowest 12 x 12 frequencies: 144 bits, kept in three 64-bit words
NEAR_DUPLICATE_BITS = 8  # of 144; chosen on fashion-mnist-6k with planted copies (benchmarks/audit.py)
ALIGNED_BITS = 6  # of 144, once aligned (aligning brings look-alikes closer too); chosen likewise
UNIFORM_STD = 2.0  # grey levels: below this an image is nearly one colour
SIZE_FACTOR = 4.0  # an image whose area is this many times larger or smaller than the median's is odd
ASPECT_FACTOR = 1.5  # ... or whose width / height is this far from the median's
COLOUR_MINORITY = 0.05  # colour images are odd when fewer than this share of a mostly grayscale folder
BLOCK = 256  # rows of the pair comparison at a time
KINDS = ("leak", "conflict", "duplicate")  # a pair's kind, most serious first
KIND_TITLES = {
    "leak": "copies across train/val/test (the test score has seen them)",
    "conflict": "copies with different labels (label conflicts)",
    "duplicate": "copies within a class",
}


@dataclass(frozen=True)
class Pair:
    """Two images that are copies of one another."""

    first: str
    second: str
    first_class: str
    second_class: str
    first_part: str | None
    second_part: str | None
    distance: int  #: bits of 144 in which their hashes differ (0: identical to the eye)
    aligned: bool = False  #: found after aligning the two (a crop or a shift): ``distance`` is then once aligned

    @property
    def apart(self) -> str:
        return f"{self.distance} bits apart" + (" once aligned" if self.aligned else "")

    @property
    def kind(self) -> str:
        if self.first_part != self.second_part:
            return "leak"
        return "conflict" if self.first_class != self.second_class else "duplicate"

    @property
    def excluded(self) -> list[str]:
        """What to leave out: a leak's copy outside train (or the second), a duplicate's second, both of a
        conflict's (which label is right cannot be told from the pixels)."""
        if self.kind == "conflict":
            return [self.first, self.second]
        if self.kind == "leak" and self.second_part == "train":
            return [self.first]
        return [self.second]


@dataclass(frozen=True)
class Oddity:
    path: str
    reason: str


@dataclass(frozen=True)
class LabelSuspect:
    """A file whose label a quick model, which never saw it, doubts."""

    path: str
    given: str
    likely: str
    given_probability: float
    likely_probability: float


@dataclass
class AuditReport:
    """What ``audit`` found; ``to_json`` for scripts, ``exclusions`` for ``search --exclude``."""

    root: str
    images: int
    class_counts: dict[str, int]
    part_counts: dict[str, int] | None
    pairs: list[Pair] = field(default_factory=list)
    oddities: list[Oddity] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS
    label_suspects: list[LabelSuspect] = field(default_factory=list)
    label_check: str = "not run"  #: how the labels were checked, or why they were not

    def of_kind(self, kind: str) -> list[Pair]:
        return [pair for pair in self.pairs if pair.kind == kind]

    def exclusions(self) -> list[str]:
        """Files to leave out of a search, most serious first: one of each pair of copies, both of a conflict."""
        return list(dict.fromkeys(path for pair in self.pairs for path in pair.excluded))

    def to_json(self) -> str:
        found = asdict(self)
        found["pairs"] = [{**asdict(pair), "kind": pair.kind} for pair in self.pairs]
        found["counts"] = {kind: len(self.of_kind(kind)) for kind in KINDS} | {
            "oddities": len(self.oddities),
            "label_suspects": len(self.label_suspects),
        }
        found["method"] = (
            f"perceptual hash ({HASH_FREQUENCIES**2}-bit DCT sign hash at {HASH_SIZE} px); pairs within "
            f"{self.near_duplicate_bits} bits are copies; each val or test image is also aligned (ECC, affine, "
            f"{ALIGN_SIZE} px) onto its {CANDIDATES} nearest training images and each image onto its {NEIGHBOURS} "
            f"nearest in its own part, and a pair within {ALIGNED_BITS} bits once aligned is a copy"
        )
        return json.dumps(found, indent=2)

    def write_exclusions(self, path: Path) -> None:
        lines = [
            f"# automl-img audit of {self.root}: files to leave out of a search, relative to that folder.",
            "# Delete a line to keep its file; pass this file to `automl-img search DATA_DIR --exclude FILE`.",
        ]
        reasons: dict[str, str] = {}
        for pair in self.pairs:
            for path_ in pair.excluded:
                other = pair.second if path_ == pair.first else pair.first
                reasons.setdefault(path_, f"{pair.kind} of {other} ({pair.apart})")
        lines += [f"{path_}  # {reasons[path_]}" for path_ in self.exclusions()]
        if self.label_suspects:
            lines += ["", "# Likely label errors: move each file to its class, or remove the '# ' to leave it out."]
            lines += [
                f"# {s.path}  # labelled {s.given} ({s.given_probability:.2f}), looks like {s.likely} "
                f"({s.likely_probability:.2f})"
                for s in self.label_suspects
            ]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def audit(
    image_set: ImageSet,
    max_bits: int = NEAR_DUPLICATE_BITS,
    cache: AuditCache | None = None,
    aligned_bits: int | None = ALIGNED_BITS,
) -> AuditReport:
    """Hash and measure every image of the set (those ``cache`` knows are not decoded again), compare every pair,
    then align each image onto its nearest look-alikes (``aligned.aligned_pairs``; not with ``aligned_bits=None``)."""
    started = time.monotonic()
    cache = cache or AuditCache([None] * len(image_set))
    known = [cache.facts.get(key) if key is not None else None for key in cache.keys]
    missing = [row for row, found in enumerate(known) if found is None]
    # OpenCV releases the GIL while it decodes; a broken file's complaint is in the report, not on the screen
    with native_stderr_muted(), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        decoded = list(pool.map(_facts, [image_set.absolute(image_set.paths[row]) for row in missing]))
    facts: list[ImageFacts | str | None] = list(known)
    for row, found in zip(missing, decoded):
        facts[row] = found
        key = cache.keys[row]
        if isinstance(found, ImageFacts) and key is not None:
            cache.facts[key] = found
    readable = [row for row, found in enumerate(facts) if isinstance(found, ImageFacts)]
    unreadable = [(image_set.paths[row], found) for row, found in enumerate(facts) if isinstance(found, str)]
    good = [found for found in facts if isinstance(found, ImageFacts)]
    hashes = np.array([found.hash for found in good], dtype=np.uint64).reshape(len(good), WORDS)
    parts = image_set.parts
    names = image_set.class_names

    def describe(index: int) -> tuple[str, str, str | None]:
        row = readable[index]
        return image_set.paths[row], names[image_set.labels[row]], parts[row] if parts else None

    matches = [(first, second, distance, False) for first, second, distance in near_pairs(hashes, max_bits)]
    if aligned_bits is not None:
        good_parts = [parts[row] for row in readable] if parts else None
        matches += [
            (first, second, distance, True)
            for first, second, distance in _aligned(
                cache, image_set, readable, good, good_parts, matches, max_bits, aligned_bits
            )
        ]
    pairs = []
    for first, second, distance, aligned in matches:
        (a, a_class, a_part), (b, b_class, b_part) = describe(first), describe(second)
        pairs.append(Pair(a, b, a_class, b_class, a_part, b_part, distance, aligned))
    pairs.sort(key=lambda pair: (KINDS.index(pair.kind), pair.distance, pair.first))
    return AuditReport(
        root=str(image_set.root),
        images=len(image_set),
        class_counts={name: int(n) for name, n in zip(names, np.bincount(image_set.labels, minlength=len(names)))},
        part_counts=dict(Counter(parts)) if parts else None,
        pairs=pairs,
        oddities=_oddities([image_set.paths[row] for row in readable], good),
        unreadable=[*image_set.skipped, *unreadable],
        seconds=time.monotonic() - started,
        near_duplicate_bits=max_bits,
    )


@dataclass(frozen=True)
class ExactCopies:
    """Byte-identical files that the split put in two parts, or that carry two labels: what a search checks
    before its first trial (reading every file once, decoding none)."""

    across_parts: int  #: files with an identical copy in another part of the split
    across_classes: int  #: files with an identical copy in another class


def exact_copies(image_set: ImageSet, parts: np.ndarray) -> ExactCopies:
    """``parts``: each image's part of the split (any labels that tell parts apart)."""
    groups: dict[bytes, list[int]] = {}
    for row, path in enumerate(image_set.paths):
        try:
            digest = hashlib.blake2b(image_set.absolute(path).read_bytes(), digest_size=16).digest()
        except OSError:
            continue  # the search's decode reports it
        groups.setdefault(digest, []).append(row)
    across_parts = across_classes = 0
    for rows in groups.values():
        if len(rows) > 1:
            across_parts += len(rows) * (len(set(parts[rows].tolist())) > 1)
            across_classes += len(rows) * (len(set(image_set.labels[rows].tolist())) > 1)
    return ExactCopies(across_parts, across_classes)


WORDS = -(-(HASH_FREQUENCIES**2) // 64)


def perceptual_hash(image: np.ndarray) -> tuple[int, ...]:
    """144 bits as three 64-bit words (the last padded with zeros): the signs of the lowest 12x12 DCT frequencies
    of the grayscale image at 32 px, against their median."""
    gray = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (HASH_SIZE, HASH_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:HASH_FREQUENCIES, :HASH_FREQUENCIES].flatten()
    bits = low > np.median(low[1:])  # the constant term left out of the median: brightness does not move it
    packed = np.zeros(WORDS * 8, dtype=np.uint8)
    packed[: -(-len(bits) // 8)] = np.packbits(bits)
    return tuple(int(word) for word in packed.view(">u8"))


def near_pairs(hashes: np.ndarray, max_bits: int) -> list[tuple[int, int, int]]:
    """``(i, j, bits)`` for every pair i < j whose hashes ((images, words) uint64) differ in at most ``max_bits``
    bits."""
    found = []
    for start in range(0, len(hashes), BLOCK):
        rows = hashes[start : start + BLOCK]
        distances = np.zeros((len(rows), len(hashes) - start), dtype=np.uint16)
        for word in range(hashes.shape[1]):
            distances += np.bitwise_count(rows[:, None, word] ^ hashes[None, start:, word])
        first, second = np.nonzero(distances <= max_bits)
        keep = second > first  # each pair once, no image with itself
        for i, j in zip(first[keep], second[keep]):
            found.append((start + int(i), start + int(j), int(distances[i, j])))
    return found


def _aligned(
    cache: AuditCache,
    image_set: ImageSet,
    readable: list[int],
    good: list[ImageFacts],
    parts: list[str] | None,
    matches: list[tuple[int, int, int, bool]],
    max_bits: int,
    aligned_bits: int,
) -> list[tuple[int, int, int]]:
    """The pairs found by alignment (``aligned.aligned_pairs``), or those the cache holds for the same files, parts
    and thresholds."""
    names = sorted(set(parts or []))
    codes = np.array([names.index(part) for part in parts]) if parts else np.zeros(len(readable), dtype=np.int64)
    digest = f"{cache.digest(readable, codes)}:{max_bits}:{aligned_bits}:{CANDIDATES}:{NEIGHBOURS}"
    if cache.aligned is not None and cache.aligned[0] == digest and None not in cache.keys:
        return [(int(a), int(b), int(bits)) for a, b, bits in cache.aligned[1]]
    found = aligned_pairs(
        [image_set.absolute(image_set.paths[row]) for row in readable],
        parts,
        np.stack([f.thumbnail for f in good]) if good else np.zeros((0, 16, 16), np.uint8),
        {frozenset((first, second)) for first, second, _, _ in matches},
        aligned_bits,
        _bits_apart,
    )
    cache.aligned = (digest, np.array(found, dtype=np.int64).reshape(len(found), 3))
    return found


def _bits_apart(first: np.ndarray, second: np.ndarray) -> int:
    """Bits between the hashes of two grayscale images (2-D arrays of any number type)."""
    words = [np.array(perceptual_hash(image[:, :, None]), dtype=np.uint64) for image in (first, second)]
    return int(np.bitwise_count(words[0] ^ words[1]).sum())


def _facts(path: Path) -> ImageFacts | str:
    try:
        image = read_image(path)
    except UnreadableImage as exc:
        return str(exc)
    colour = image.shape[2] == 3 and not (
        np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2])
    )
    small = cv2.resize(image, (HASH_SIZE, HASH_SIZE), interpolation=cv2.INTER_AREA)
    gray = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return ImageFacts(
        perceptual_hash(image), image.shape[0], image.shape[1], colour, float(small.std()), thumbnail(gray)
    )


def _oddities(paths: list[str], facts: list[ImageFacts]) -> list[Oddity]:
    if not facts:
        return []
    area = float(np.median([f.height * f.width for f in facts]))
    aspect = float(np.median([f.width / f.height for f in facts]))
    side = math.sqrt(area)
    colour_share = sum(f.colour for f in facts) / len(facts)
    found = []
    for path, f in zip(paths, facts):
        if f.std < UNIFORM_STD:
            found.append(Oddity(path, f"nearly uniform (its pixels vary by {f.std:.1f} grey levels)"))
        if not 1 / SIZE_FACTOR <= f.height * f.width / area <= SIZE_FACTOR:
            found.append(Oddity(path, f"{f.width}x{f.height} px, far from the usual {side:.0f} px a side"))
        if not 1 / ASPECT_FACTOR <= (f.width / f.height) / aspect <= ASPECT_FACTOR:
            found.append(Oddity(path, f"shaped {f.width}x{f.height}, unlike the others (width/height {aspect:.2f})"))
        if f.colour and 0 < colour_share < COLOUR_MINORITY:
            found.append(Oddity(path, f"in colour among {1 - colour_share:.0%} grayscale images"))
    return found
