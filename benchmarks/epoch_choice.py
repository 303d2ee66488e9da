"""Which epoch should a trial keep? One default trial per seed (blog-cnn at 128 px, 13 epochs), with the test
split scored after every epoch, then the test accuracy each rule for the kept epoch would have given:

- ``best val, all epochs``: the best val accuracy of any epoch (automl-img before stop 44);
- ``best val, second half``: the best of the schedule's second half (since stop 44);
- ``last epoch``, ``least val loss``, and ``best test`` (what no rule can know: the bound).

Every rule reads one and the same training per seed, so they compare paired. The trials are the real ones
(`automl-img search --trials 1`), run from a temporary git worktree of this checkout with
``exploratory/epoch_test_scores.patch`` applied (it writes each epoch's val and test scores to $EPOCH_TEST).

    python benchmarks/epoch_choice.py [--data benchmarks/data/finedetail] [--seeds 0-9] [--work /tmp/epochs]
    python benchmarks/epoch_choice.py --search-args "--class-weights off" --work /tmp/epochs-unweighted

A seed whose epochs file is complete in --work is read back, not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import DATA, HERE, write_result

RULES = {
    "best val, all epochs": lambda rows: max(rows, key=lambda r: r["val"]["accuracy"]),
    "best val, second half": lambda rows: max(rows[len(rows) // 2 :], key=lambda r: r["val"]["accuracy"]),
    "last epoch": lambda rows: rows[-1],
    "least val loss": lambda rows: min(rows, key=lambda r: r["val"]["loss"]),
    "best test": lambda rows: max(rows, key=lambda r: r["test"]["accuracy"]),
}


def epochs_of(
    seed: int, work: Path, data: Path, epochs: int, image_size: int, checkout: Path, extra: list[str]
) -> list[dict]:
    """Each epoch's val and test scores of the seed's default trial, training it when not already in ``work``."""
    folder = work / f"seed{seed}"
    scores = folder / "epochs.jsonl"
    if not (scores.exists() and len(scores.read_text().splitlines()) == epochs):
        folder.mkdir(parents=True, exist_ok=True)
        scores.unlink(missing_ok=True)
        command = [sys.executable, "-m", "automl_img", "search", str(data), "--trials", "1", "--epochs", str(epochs)]
        command += ["--seed", str(seed), "-p", f"image_size={image_size}", "--quiet", *extra]
        environment = {**os.environ, "EPOCH_TEST": str(scores), "PYTHONPATH": str(checkout)}
        subprocess.run(command, cwd=folder, env=environment, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in scores.read_text().splitlines()]


def patched_checkout(into: Path) -> Path:
    """A worktree of this checkout's HEAD with the epoch scores patch applied."""
    checkout = into / "checkout"
    if not checkout.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(checkout), "HEAD"], cwd=HERE, check=True)
        patch = HERE / "exploratory" / "epoch_test_scores.patch"
        subprocess.run(["git", "apply", str(patch)], cwd=checkout, check=True)
    return checkout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "finedetail")
    parser.add_argument("--seeds", default="0-9", help="first-last")
    parser.add_argument("--epochs", type=int, default=13)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--search-args", default="", help='more for every search, e.g. "--class-weights off"')
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="epochs-"))
    first, last = (int(part) for part in args.seeds.split("-"))
    checkout = patched_checkout(work)
    extra = shlex.split(args.search_args)
    runs = []
    for seed in range(first, last + 1):
        rows = epochs_of(seed, work, args.data.resolve(), args.epochs, args.image_size, checkout, extra)
        kept = {name: rule(rows) for name, rule in RULES.items()}
        runs.append(
            {
                "seed": seed,
                "kept": {
                    name: {"epoch": row["epoch"], "test_accuracy": row["test"]["accuracy"]}
                    for name, row in kept.items()
                },
                "val_accuracy": [round(row["val"]["accuracy"], 4) for row in rows],
                "test_accuracy": [round(row["test"]["accuracy"], 4) for row in rows],
            }
        )
        print(seed, {name: (row["epoch"], round(row["test"]["accuracy"], 4)) for name, row in kept.items()}, flush=True)
    means = {name: round(statistics.mean(run["kept"][name]["test_accuracy"] for run in runs), 4) for name in RULES}
    print(means)
    subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=HERE, check=True)
    variant = "".join("-" + part.lstrip("-") for part in extra)
    write_result(
        f"epoch_choice-{args.data.name}{variant}",
        {
            "data": str(args.data),
            "search_args": extra,
            "image_size": args.image_size,
            "epochs": args.epochs,
            "mean_test_accuracy": means,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
