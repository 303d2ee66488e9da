"""What a 100,000-image folder costs on this machine: listing, first decode, cached load, disk, memory.

    python benchmarks/scale.py [--images 100000] [--side 96] [--train-size 32]

Writes Fashion-MNIST's 70,000 images (train and test together) enlarged to SIDE px, plus mirrored
copies up to IMAGES, as PNG class folders under benchmarks/data/ (once; the writing is not timed
as part of the figures). Then, each in a fresh process where it matters:
- listing: the folder loader's walk (every file stat'ed, nothing decoded);
- first decode and cached load: the pixel cache at SIDE px and at TRAIN_SIZE px, both cores, then
  a second load of the same cache (a later run's cost), and the cache files' size on disk;
- a real search: `automl-img search --trials 1 --epochs 1 -p image_size=TRAIN_SIZE`, with the peak
  resident memory of the search process and of its trial process (which records its own).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import optuna
from _common import DATA, peak_resident_mb, resident_mb, write_result
from fashion_mnist import CLASSES, load


def write_folder(folder: Path, images: int, side: int) -> Path:
    if (folder / CLASSES[-1]).exists():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pixels, labels = zip(*(load(part) for part in ("train", "test")))
    pixels, labels = np.concatenate(pixels), np.concatenate(labels)
    for name in CLASSES:
        (staging / name).mkdir(parents=True)
    for index in range(images):
        source = index % len(pixels)
        image = cv2.resize(pixels[source], (side, side), interpolation=cv2.INTER_LINEAR)
        if index >= len(pixels):
            image = image[:, ::-1]
        cv2.imwrite(str(staging / CLASSES[labels[source]] / f"{index:06d}.png"), image)
    staging.rename(folder)
    return folder


def measure_in_child(code: str, folder: Path, studies: Path) -> dict:
    """Run ``code`` in a fresh interpreter (cold imports and page cache as a new search would see them)."""
    script = f"""
import json, os, time, sys
os.environ["AUTOML_IMG_STUDIES"] = {str(studies)!r}
sys.path.insert(0, {str(Path(__file__).parent)!r})
from _common import peak_resident_mb
from pathlib import Path
folder = Path({str(folder)!r})
{code}
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--train-size", type=int, default=32)
    args = parser.parse_args()
    started = time.time()
    folder = write_folder(DATA / f"fashion-mnist-{args.images // 1000}k-{args.side}px", args.images, args.side)
    figures: dict = {
        "images": args.images,
        "side_px": args.side,
        "train_size_px": args.train_size,
        "writing_seconds_not_part_of_the_figures": round(time.time() - started, 1),
        "folder_bytes": sum(p.stat().st_size for p in folder.rglob("*.png")),
    }
    studies = Path(tempfile.mkdtemp(prefix="scale-studies-"))
    figures["listing"] = measure_in_child(
        """
from automl_img.data.imageset import list_image_folder
t = time.time(); found = list_image_folder(folder); seconds = time.time() - t
print(json.dumps({"seconds": round(seconds, 2), "files": len(found), "peak_resident_mb": round(peak_resident_mb(), 1)}))
""",
        folder,
        studies,
    )
    for size in (args.side, args.train_size):
        figures[f"cache_{size}px"] = measure_in_child(
            f"""
from automl_img.data.cache import ImageCache
from automl_img.data.imageset import list_image_folder
found = list_image_folder(folder)
cache = ImageCache(Path(os.environ["AUTOML_IMG_STUDIES"]) / "cache", found)
t = time.time(); first = cache.load({size}, 1); decode = time.time() - t
t = time.time(); again = ImageCache(Path(os.environ["AUTOML_IMG_STUDIES"]) / "cache", found).load({size}, 1)
cached = time.time() - t
assert again.images.shape == first.images.shape
files = [p for p in (Path(os.environ["AUTOML_IMG_STUDIES"]) / "cache").rglob("*")
         if p.is_file() and "-{size}px-" in p.name]
print(json.dumps({{"first_decode_seconds": round(decode, 1), "images_per_second": round(len(found) / decode),
                  "cached_load_seconds": round(cached, 2), "cache_bytes_on_disk": sum(p.stat().st_size for p in files),
                  "peak_resident_mb": round(peak_resident_mb(), 1)}}))
""",
            folder,
            studies,
        )
    # A real search: listing, split, one trial (decode from the cache made above, 1 epoch), with the memory
    # of the search process sampled while it runs (its trial process records its own).
    work = Path(tempfile.mkdtemp(prefix="scale-search-"))
    search = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "automl_img",
            "search",
            str(folder),
            "--trials",
            "1",
            "--epochs",
            "1",
            "-p",
            f"image_size={args.train_size}",
            "--quiet",
        ],
        cwd=work,
        env={**__import__("os").environ, "AUTOML_IMG_STUDIES": str(studies)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = [0.0]

    def sample() -> None:
        while search.poll() is None:
            with contextlib.suppress(OSError, StopIteration):
                peak[0] = max(peak[0], resident_mb(search.pid), peak_resident_mb(search.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.time()
    output = search.communicate()[0]
    sampler.join()
    if search.returncode != 0:
        raise SystemExit(output)
    trial = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{studies}/automl-img.db").trials[0]
    figures["search_one_trial_one_epoch"] = {
        "wall_seconds": round(time.time() - t, 1),
        "training_seconds": trial.user_attrs.get("seconds"),
        "val_accuracy": trial.value,
        "search_process_peak_resident_mb": round(peak[0], 1),
        "trial_process_resident_mb_after_training": trial.user_attrs.get("resident_mb"),
    }
    figures["cache_bytes_total"] = sum(p.stat().st_size for p in (studies / "cache").rglob("*") if p.is_file())
    print(figures)
    write_result(f"scale-{args.images // 1000}k-{args.side}px", figures)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(studies, ignore_errors=True)


if __name__ == "__main__":
    main()
