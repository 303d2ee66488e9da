"""Which sampler/pruner pairing finds the best model in a fixed time: the evidence for the default.

    python benchmarks/pruners.py [--data benchmarks/data/fashion-mnist-6k] [--budget 600] [--seeds 0 1]

Runs `automl-img search --timeout BUDGET --sampler S --pruner P --seed K` then export-best for each
pairing and seed, one after another, and reports val and test accuracy of the exported model and
the trials completed and pruned.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import DATA, write_result
from compare import run_automl

PAIRINGS = (("tpe", "median"), ("tpe", "none"), ("random", "median"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "fashion-mnist-6k")
    parser.add_argument("--budget", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pruners-"))
    runs: dict[str, list[dict]] = {}
    for seed in args.seeds:  # seeds outermost: a slow spell of the machine hits every pairing alike
        for sampler, pruner in PAIRINGS:
            name = f"{sampler}+{pruner}"
            figures = run_automl(
                args.data.resolve(),
                args.budget,
                work,
                f"{name}-{seed}",
                "--sampler",
                sampler,
                "--pruner",
                pruner,
                "--seed",
                str(seed),
            )
            runs.setdefault(name, []).append(
                {
                    k: figures[k]
                    for k in (
                        "test_accuracy",
                        "val_accuracy",
                        "trials_completed",
                        "trials_pruned",
                        "trials_failed",
                        "seconds",
                        "best_trial",
                        "trial_0_val_accuracy",
                    )
                }
            )
            print(name, seed, runs[name][-1], flush=True)
    summary = {
        name: {
            "mean_test_accuracy": round(statistics.mean(r["test_accuracy"] for r in rs), 4),
            "mean_val_accuracy": round(statistics.mean(r["val_accuracy"] for r in rs), 4),
            "mean_trials_finished": statistics.mean(r["trials_completed"] + r["trials_pruned"] for r in rs),
        }
        for name, rs in runs.items()
    }
    write_result(
        f"pruners-{args.data.name}-{args.budget}s",
        {"budget_seconds": args.budget, "seeds": args.seeds, "summary": summary, "runs": runs},
    )


if __name__ == "__main__":
    main()
