"""`automl-img audit` on folders with planted copies: recall and precision of the leaks it finds, by threshold.

    python benchmarks/audit.py [--data fashion-mnist-6k] [--copies 200] [--within 200] [--seed 0]
    python benchmarks/audit.py --data fashion-mnist --timing     # 10,000 images, twice: the second reads the cache
    python benchmarks/audit.py --scale 100000                     # time and memory without the label check
    python benchmarks/audit.py --larger                           # cropped and resized leaks on 112-160 px images
    python benchmarks/audit.py --outliers 60 [--data ...]         # images from elsewhere: flagged far from every class?

Copies DATA (pre-split train/test PNG folders) to a temporary folder and plants COPIES copies of training
images into test, each changed one way: re-encoded as JPEG (quality 85), resized by 90-110 %, cropped by up to
5 % on each side, or brightened or darkened by up to 10 %. Then audits it and counts, for every threshold in
bits, the planted leaks found (recall) and the share of reported cross-split pairs that are planted
(precision). WITHIN more copies stay in train, changed the same ways, half in their own class (duplicates) and
half in another (label conflicts): their recall, and the planted share of the pairs reported within a part. The
same audit of the clean folder (no copies planted) gives the pairs it reports there. Then FLIP (5 %) of the
other training images are moved to another class, and the label check's suspects are scored:
precision among the top k for k = a quarter, half, all and twice the number flipped. The threshold was chosen
on fashion-mnist-6k; fashion-mnist-6k-b reports.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import DATA, write_result

CHANGES = ("jpeg", "resize", "crop", "brightness")  # planted copy n is changed the way CHANGES[n % 4] says


def plant(folder: Path, copies: int, rng: np.random.Generator) -> set[tuple[str, str]]:
    """Copy training images into test, changed; returns the (train path, test path) pairs, relative."""
    train = sorted((folder / "train").rglob("*.png"))
    planted = set()
    for n, source in enumerate(rng.choice(len(train), size=copies, replace=False)):
        path = train[int(source)]
        image, suffix = change(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), n % len(CHANGES), rng)
        target = folder / "test" / path.parent.name / f"planted-{n}{suffix}"
        cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 85] if suffix == ".jpg" else [])
        planted.add((str(path.relative_to(folder)), str(target.relative_to(folder))))
    return planted


def change(image: np.ndarray, how: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The image changed the way CHANGES[how] says, and the suffix to save it under (JPEG for "jpeg")."""
    height, width = image.shape
    if how == 1:
        scale = rng.uniform(0.9, 1.1)
        image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    elif how == 2:
        top, left, bottom, right = (int(rng.integers(0, max(1, round(0.05 * side)) + 1)) for side in (height,) * 4)
        image = image[top : height - bottom or None, left : width - right or None]
    elif how == 3:
        image = np.clip(image.astype(np.float32) * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
    return image, ".jpg" if how == 0 else ".png"


def plant_within(folder: Path, copies: int, rng: np.random.Generator, keep: set[str]) -> set[tuple[str, str]]:
    """Copy training images (not in ``keep``) into train, changed as ``change`` says; copy n goes to its own class
    when (n // 4) is even, else to another. Returns the (source, copy) pairs, relative."""
    if not copies:
        return set()  # the random stream left as it was: the runs without them are repeated exactly
    train = [p for p in sorted((folder / "train").rglob("*.png")) if str(p.relative_to(folder)) not in keep]
    classes = sorted(p.name for p in (folder / "train").iterdir())
    planted = set()
    for n, source in enumerate(rng.choice(len(train), size=copies, replace=False)):
        path = train[int(source)]
        own = classes.index(path.parent.name)
        target_class = classes[own if (n // 4) % 2 == 0 else (own + int(rng.integers(1, len(classes)))) % len(classes)]
        image, suffix = change(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), n % len(CHANGES), rng)
        target = folder / "train" / target_class / f"within-{n}{suffix}"
        cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 85] if suffix == ".jpg" else [])
        planted.add((str(path.relative_to(folder)), str(target.relative_to(folder))))
    return planted


def flip(folder: Path, share: float, keep: set[str], rng: np.random.Generator) -> set[str]:
    """Move ``share`` of the training images (not those in ``keep``) to another class; returns their new paths."""
    train = [p for p in sorted((folder / "train").rglob("*.png")) if str(p.relative_to(folder)) not in keep]
    classes = sorted(p.name for p in (folder / "train").iterdir())
    flipped = set()
    for index in rng.choice(len(train), size=round(share * len(train)), replace=False):
        path = train[int(index)]
        other = classes[(classes.index(path.parent.name) + int(rng.integers(1, len(classes)))) % len(classes)]
        target = folder / "train" / other / f"flipped-{path.name}"
        path.rename(target)
        flipped.add(str(target.relative_to(folder)))
    return flipped


def timing(folder: Path) -> None:
    """The whole audit (hashes, pairs, oddities, labels) of one folder, twice into one folder (the second run
    reads the first one's cache), as `automl-img audit` runs it."""
    import resource

    from automl_img.outputs.audit_report import run_audit
    from automl_img.plugins import PluginSource

    registry = PluginSource().load()
    out = Path(tempfile.mkdtemp(prefix="audit-timing-"))  # the second run finds the first one's cache there
    runs = []
    for _ in range(2):
        started = time.monotonic()
        result = run_audit(registry, str(folder), out=out)
        runs.append(round(time.monotonic() - started, 1))
    figures = {
        "folder": str(folder.relative_to(DATA)),
        "images": result.report.images,
        "seconds": runs,
        "peak_resident_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "pairs": {kind: len(result.report.of_kind(kind)) for kind in ("leak", "conflict", "duplicate")},
        "label_suspects": len(result.report.label_suspects),
    }
    print(figures)
    write_result(f"audit-timing-{folder.parent.name}", figures)


def scale(images: int) -> None:
    """Time and peak memory of the audit without its label check on a generated folder of ``images`` images:
    Fashion-MNIST's 70,000 (linked, not copied) and as many of their mirror images as it takes."""
    import os
    import resource

    from automl_img.outputs.audit_report import run_audit
    from automl_img.plugins import PluginSource

    source = DATA / "fashion-mnist"
    folder = Path(tempfile.mkdtemp(prefix="audit-scale-")) / "data"
    files = sorted(source.rglob("*.png"))
    for n in range(images):
        original = files[n % len(files)]
        target = folder / original.relative_to(source).parent / f"{n // len(files)}-{original.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if n < len(files):
            os.link(original, target)
        else:
            cv2.imwrite(str(target), cv2.imread(str(original), cv2.IMREAD_GRAYSCALE)[:, ::-1])
    started = time.monotonic()
    result = run_audit(PluginSource().load(), str(folder), out=folder.parent / "audit", labels=False)
    figures = {
        "images": result.report.images,
        "seconds": round(time.monotonic() - started, 1),
        "peak_resident_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "pairs": {kind: len(result.report.of_kind(kind)) for kind in ("leak", "conflict", "duplicate")},
    }
    print(figures)
    write_result(f"audit-scale-{images}", figures)
    shutil.rmtree(folder.parent)


def larger() -> None:
    """Leaks by cropping and resizing together, on images larger than Fashion-MNIST's 28 px: 400 training images of
    fashion-mnist-6k-b enlarged to 112 px and 220 patches of 160 px from scikit-image's photographs; every other one
    copied into test, cropped by 0-5 % on each side at random, then resized by 90-110 %."""
    from skimage import data as photographs

    from automl_img.data import list_image_folder
    from automl_img.data.audit import audit

    rng = np.random.default_rng(3)
    fashion = sorted((DATA / "fashion-mnist-6k-b" / "train").rglob("*.png"))
    sources = [
        ("fashion", cv2.resize(cv2.imread(str(fashion[int(i)]), cv2.IMREAD_GRAYSCALE), (112, 112), cv2.INTER_CUBIC))
        for i in rng.choice(len(fashion), 400, replace=False)
    ]
    for name in ("astronaut", "camera", "coffee", "chelsea", "rocket", "page", "moon", "horse", "brick", "grass"):
        photo = np.asarray(getattr(photographs, name)())
        photo = (photo * 255).astype(np.uint8) if photo.dtype == bool else photo
        gray = photo if photo.ndim == 2 else cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        for _ in range(22):
            top, left = (int(rng.integers(0, side - 160)) for side in gray.shape[:2])
            sources.append(("photo", gray[top : top + 160, left : left + 160]))
    root = Path(tempfile.mkdtemp(prefix="audit-larger-"))
    planted = set()
    for n, (kind, image) in enumerate(sources):
        for part in ("train", "test"):
            (root / part / kind).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "train" / kind / f"{n}.png"), image)
        if n % 2 == 0:
            height, width = image.shape
            top, bottom, left, right = (
                int(rng.integers(0, round(0.05 * side) + 1)) for side in (height,) * 2 + (width,) * 2
            )
            crop = image[top : height - bottom, left : width - right]
            scale = rng.uniform(0.9, 1.1)
            size = (round(crop.shape[1] * scale), round(crop.shape[0] * scale))
            cv2.imwrite(
                str(root / "test" / kind / f"copy-{n}.png"), cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
            )
            planted.add((f"train/{kind}/{n}.png", f"test/{kind}/copy-{n}.png"))
    figures: dict = {"images": len(sources) + len(planted), "planted": len(planted)}
    for name, options in (("hash_alone", {"aligned_bits": None}), ("hash_and_aligned", {})):
        started = time.monotonic()
        report = audit(list_image_folder(root), **options)
        found = {frozenset((p.first, p.second)) for p in report.pairs if p.kind == "leak"}
        figures[name] = {
            "seconds": round(time.monotonic() - started, 1),
            "leak_recall": round(float(np.mean([frozenset(pair) in found for pair in planted])), 4),
            **{
                f"{kind}_recall": round(
                    float(np.mean([frozenset(p) in found for p in planted if f"/{kind}/" in p[0]])), 4
                )
                for kind in ("fashion", "photo")
            },
            "leaks_reported": len(found),
            "false_leaks": len(found) - sum(frozenset(pair) in found for pair in planted),
        }
    print(figures)
    write_result("audit-larger", figures)
    shutil.rmtree(root)


def strays(count: int, size: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """``count`` grayscale images of ``size`` px from elsewhere, a third each: patches of scikit-image's photographs,
    scikit-learn's 8 px digits enlarged, and smooth noise."""
    from skimage import data as photographs
    from sklearn.datasets import load_digits

    photos = []
    for name in ("astronaut", "camera", "coffee", "chelsea", "rocket", "page", "moon", "horse", "brick", "grass"):
        photo = np.asarray(getattr(photographs, name)())
        photo = (photo * 255).astype(np.uint8) if photo.dtype == bool else photo
        photos.append(photo if photo.ndim == 2 else cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))
    digits = load_digits().images
    found = []
    for n in range(count):
        if n % 3 == 0:
            photo = photos[int(rng.integers(len(photos)))]
            side = int(rng.integers(48, min(photo.shape[:2])))
            top, left = (int(rng.integers(0, extent - side + 1)) for extent in photo.shape[:2])
            image = cv2.resize(photo[top : top + side, left : left + side], (size, size), interpolation=cv2.INTER_AREA)
            found.append(("photo", image))
        elif n % 3 == 1:
            digit = (digits[int(rng.integers(len(digits)))] * 255 / 16).astype(np.uint8)
            found.append(("digit", cv2.resize(digit, (size, size), interpolation=cv2.INTER_LINEAR)))
        else:
            noise = cv2.resize(rng.normal(128, 60, (size // 4, size // 4)), (size, size), interpolation=cv2.INTER_CUBIC)
            found.append(("noise", np.clip(noise, 0, 255).astype(np.uint8)))
    return found


def outlier_check(data: str, count: int, seed: int) -> None:
    """COUNT images from elsewhere (``strays``) planted into random training classes of DATA: the share of them the
    audit flags as far from every class, and how many of DATA's own images it flags, clean and planted."""
    from automl_img.data import list_image_folder
    from automl_img.data.audit import audit
    from automl_img.outputs.audit_report import check_labels

    rng = np.random.default_rng(seed)
    work = Path(tempfile.mkdtemp(prefix="audit-outliers-"))
    clean = Path(shutil.copytree(DATA / data, work / "clean"))
    planted = Path(shutil.copytree(clean, work / "planted"))
    classes = sorted(p.name for p in (planted / "train").iterdir())
    size = cv2.imread(str(next((planted / "train").rglob("*.png"))), cv2.IMREAD_GRAYSCALE).shape[0]
    kinds = {}
    for n, (kind, image) in enumerate(strays(count, size, rng)):
        path = f"train/{classes[int(rng.integers(len(classes)))]}/stray-{n}.png"
        cv2.imwrite(str(planted / path), image)
        kinds[path] = kind
    figures: dict = {"data": data, "planted": count}
    for name, folder in (("clean", clean), ("planted", planted)):
        image_set = list_image_folder(folder)
        report = audit(image_set, aligned_bits=None)
        started = time.monotonic()
        check_labels(report, image_set)
        flagged = [o.path for o in report.oddities if o.reason.startswith("far from every class")]
        figures[f"{name}_images"] = report.images
        figures[f"{name}_check_seconds"] = round(time.monotonic() - started, 1)
        figures[f"{name}_flagged"] = len(flagged)
        if name == "planted":
            figures["flagged_not_planted"] = len(set(flagged) - set(kinds))
            figures["recall"] = round(len(set(flagged) & set(kinds)) / count, 4)
            figures["recall_by_kind"] = {
                kind: round(float(np.mean([path in flagged for path, k in kinds.items() if k == kind])), 4)
                for kind in sorted(set(kinds.values()))
            }
        figures[f"{name}_examples"] = flagged[:10]
    print(figures)
    write_result(f"audit-outliers-{data}", figures)
    shutil.rmtree(work)


def _change_of(pair: tuple[str, str]) -> str:
    return CHANGES[int(Path(pair[1]).stem.split("-")[-1]) % len(CHANGES)]


def _scores(found: list, planted: set[tuple[str, str]], within: set[tuple[str, str]]) -> dict[str, float]:
    """Planted copies found as leaks, and the planted share of the leaks reported; the same for the copies planted
    within train (found as duplicates or conflicts)."""
    pairs = {frozenset((p.first, p.second)): p.kind for p in found}
    scores = {}
    for name, copies, kinds in (("leak", planted, ("leak",)), ("within", within, ("conflict", "duplicate"))):
        if not copies:
            continue
        reported = [pair for pair, kind in pairs.items() if kind in kinds]
        true = sum(pair in {frozenset(c) for c in copies} for pair in reported)
        scores[f"{name}_recall"] = round(sum(pairs.get(frozenset(c)) in kinds for c in copies) / len(copies), 4)
        label = "cross_split" if name == "leak" else "within_part"
        scores[f"precision_of_{label}_pairs"] = round(true / max(1, len(reported)), 4)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist-6k")
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--within", type=int, default=0, help="copies planted within train (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", type=float, default=0.05, help="share of training labels flipped")
    parser.add_argument("--timing", action="store_true", help="only time the whole audit of DATA/test, twice")
    parser.add_argument("--scale", type=int, help="only time the audit without labels of a generated folder this big")
    parser.add_argument("--larger", action="store_true", help="only leaks cropped and resized on 112-160 px images")
    parser.add_argument("--outliers", type=int, help="only plant this many images from elsewhere and look for them")
    args = parser.parse_args()
    if args.timing:
        return timing(DATA / args.data / "test")
    if args.scale:
        return scale(args.scale)
    if args.larger:
        return larger()
    if args.outliers:
        return outlier_check(args.data, args.outliers, args.seed)
    from automl_img.data import list_image_folder
    from automl_img.data.audit import audit
    from automl_img.outputs.audit_report import check_labels

    work = Path(tempfile.mkdtemp(prefix="audit-"))
    clean = Path(shutil.copytree(DATA / args.data, work / "clean"))
    planted_folder = Path(shutil.copytree(clean, work / "planted"))
    rng = np.random.default_rng(args.seed)
    planted = plant(planted_folder, args.copies, rng)
    within = plant_within(planted_folder, args.within, rng, {source for source, _ in planted})
    kept = {path for pair in planted | within for path in pair}
    flipped = flip(planted_folder, args.flip, kept, rng)
    figures: dict = {"data": args.data, "copies": args.copies, "within": args.within, "flipped": len(flipped)}
    for name, folder in (("clean", clean), ("planted", planted_folder)):
        # The hash alone at every threshold up to 16 bits; then the defaults' hash with aligned leaks up to 12 bits.
        for sweep, options, limit in (
            ("by_threshold", {"max_bits": 16, "aligned_bits": None}, 16),
            ("by_aligned_threshold", {"aligned_bits": 12}, 12),
        ):
            started = time.monotonic()
            report = audit(list_image_folder(folder), **options)
            figures[f"{name}_images"] = report.images
            figures[f"{name}_seconds_{sweep}"] = round(time.monotonic() - started, 1)
            for bits in range(0, limit + 1, 2):
                if sweep == "by_threshold":
                    found = [pair for pair in report.pairs if pair.distance <= bits]
                else:
                    found = [pair for pair in report.pairs if not pair.aligned or pair.distance <= bits]
                row = figures.setdefault(sweep, {}).setdefault(str(bits), {})
                row[f"{name}_pairs"] = {
                    kind: sum(p.kind == kind for p in found) for kind in ("leak", "conflict", "duplicate")
                }
                if name == "planted":
                    row.update(_scores(found, planted, within))
    started = time.monotonic()
    report = audit(list_image_folder(planted_folder))
    figures["planted_seconds_at_defaults"] = round(time.monotonic() - started, 1)
    found = {frozenset((p.first, p.second)) for p in report.pairs}
    figures["at_defaults"] = _scores(report.pairs, planted, within) | {
        f"{prefix}{how}_recall": round(float(np.mean([frozenset(pair) in found for pair in of_change])), 4)
        for prefix, copies in (("", planted), ("within_", within))
        for how in CHANGES
        if (of_change := [pair for pair in copies if _change_of(pair) == how])
    }
    image_set = list_image_folder(planted_folder)
    report = audit(image_set)
    started = time.monotonic()
    check_labels(report, image_set)
    figures["label_check_seconds"] = round(time.monotonic() - started, 1)
    figures["label_check"] = report.label_check
    ranked = [suspect.path for suspect in report.label_suspects]
    figures["label_suspects"] = len(ranked)
    figures["label_precision_at_k"] = {
        str(k): round(len(set(ranked[:k]) & flipped) / k, 4)
        for k in (len(flipped) // 4, len(flipped) // 2, len(flipped), 2 * len(flipped))
        if k
    }
    figures["label_recall_of_all_suspects"] = round(len(set(ranked) & flipped) / max(1, len(flipped)), 4)
    print(figures)
    write_result(f"audit-{args.data}" + (f"-within-{args.within}" if args.within else ""), figures)


if __name__ == "__main__":
    main()
