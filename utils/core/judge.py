"""The frozen real-titles judge: a seeded, by-group split of the extra real Shopee rows into a training part and a
validation set at a realistic density (validation groups among real single postings), written once.

`python -m utils.judge build` writes the files under `inputs/samples/shopee-real-titles-extra/judge/`;
`python -m utils.judge check` rebuilds them in memory and fails if a committed file differs, so the split
cannot drift; `python -m utils.judge compare RUN...` scores runs' 04 and 05 submissions on the validation set,
each against the first run's with a label-group bootstrap interval. The validation file carries Kaggle's `Usage`
column: its single postings are `Ignored` (look-alikes to search among, never scored), its group rows `Private`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.cli import boundary

from .data import LABEL_COLUMN, USAGE_COLUMN, DataError, read_postings, read_text_csv, read_truth
from .io import write_csv
from .metric import bootstrap_difference, row_scores
from .paths import POSTPROCESS, RUNS, SAMPLES, STACKER
from .submission import read_submission

IGNORED, SCORED = "Ignored", "Private"
EXTRA = SAMPLES / "shopee-real-titles-extra"
DEV = SAMPLES / "shopee-real-titles" / "dev.csv"
SEED = 20261204  # frozen: changing it makes a new judge, and the old figures no longer compare
VALIDATION_SHARE = 0.5  # of the extra groups, and of the singles


@dataclass(frozen=True)
class JudgeFiles:
    """The judge's files: training groups (dev.csv + the extra training groups), training distractors, validation."""

    folder: Path

    @property
    def train(self) -> Path:
        return self.folder / "train.csv"

    @property
    def train_singles(self) -> Path:
        return self.folder / "train_singles.csv"

    @property
    def validation(self) -> Path:
        return self.folder / "validation.csv"


def split_frames(dev: pd.DataFrame, groups: pd.DataFrame, singles: pd.DataFrame, seed: int = SEED,
                 share: float = VALIDATION_SHARE) -> dict[str, pd.DataFrame]:
    """The three frames of the judge: whole label groups go to one side; rows keep the files' text as read."""
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    clash = set(dev[LABEL_COLUMN]) & set(groups[LABEL_COLUMN])
    if clash:
        raise DataError(f"{len(clash)} label group(s) are in both dev.csv and the extra groups, "
                        f"e.g. {sorted(clash)[:3]}")
    rng = np.random.default_rng(seed)
    names = np.sort(groups[LABEL_COLUMN].unique())
    held = set(rng.choice(names, size=round(share * len(names)), replace=False))
    in_validation = groups[LABEL_COLUMN].isin(held).to_numpy()
    single_validation = np.zeros(len(singles), dtype=bool)
    single_validation[rng.choice(len(singles), size=round(share * len(singles)), replace=False)] = True
    validation = pd.concat([groups[in_validation].assign(**{USAGE_COLUMN: SCORED}),
                            singles[single_validation].assign(**{USAGE_COLUMN: IGNORED})], ignore_index=True)
    validation = validation.iloc[rng.permutation(len(validation))].reset_index(drop=True)  # groups not contiguous
    train = pd.concat([dev, groups[~in_validation]], ignore_index=True)
    return {"train": train, "train_singles": singles[~single_validation].reset_index(drop=True),
            "validation": validation}


def build(out: Path | None = None, seed: int = SEED) -> dict[str, pd.DataFrame]:
    """The judge's frames, split from the samples in `inputs/samples/` (nothing is written here)."""
    frames = {name: read_text_csv(path) for name, path in
              (("dev", DEV), ("groups", EXTRA / "groups.csv"), ("singles", EXTRA / "singles.csv"))}
    return split_frames(frames["dev"], frames["groups"], frames["singles"], seed)


def summary(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows, label groups and scored rows of each judge file."""
    out = []
    for name, df in frames.items():
        scored = df[USAGE_COLUMN] != IGNORED if USAGE_COLUMN in df else np.ones(len(df), dtype=bool)
        out.append({"file": f"{name}.csv", "rows": len(df), "groups": df.loc[scored, LABEL_COLUMN].nunique(),
                    "scored_rows": int(np.sum(scored))})
    return pd.DataFrame(out)


def compare(runs: list[Path], data: Path) -> pd.DataFrame:
    """F1 on `data`'s scored rows of each run's 04 and 05 submissions, and each one's difference to the first
    run's submission of the same stage with its 95% interval (label groups resampled, paired)."""
    ids = read_postings(data, require_labels=True)["posting_id"].to_numpy()
    labels, scored = read_truth(data, ids)
    out, first = [], {}
    for run in runs:
        for stage in (POSTPROCESS, STACKER):
            path = run / stage / "submission.csv"
            if not path.is_file():
                continue
            f1 = row_scores(read_submission(path, ids), labels)[0][scored]
            first.setdefault(stage, f1)
            diff = bootstrap_difference(f1, first[stage], labels[scored])
            out.append({"run": run.name, "stage": stage, "f1": float(f1.mean()), "vs_first": diff["difference"],
                        "low": diff["low"], "high": diff["high"]})
    if not out:
        raise DataError(f"no 04_postprocess or 05_stacker submission in {[str(r) for r in runs]}")
    return pd.DataFrame(out)


@boundary
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.judge", description=__doc__)
    ap.add_argument("action", choices=["build", "check", "compare"],
                    help="build: write the files; check: compare with them; compare: score runs on the validation set")
    ap.add_argument("runs", nargs="*", help="compare: run names (under outputs/runs/) or folders; the first is the "
                                            "reference")
    ap.add_argument("--out", type=Path, default=EXTRA / "judge", help="folder of the judge's files")
    args = ap.parse_args(argv)
    files = JudgeFiles(args.out)
    if args.action == "compare":
        if not args.runs:
            raise DataError("compare needs at least one run")
        table = compare([Path(r) if "/" in r else RUNS / r for r in args.runs], files.validation)
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
        return 0
    frames = build()
    paths = {"train": files.train, "train_singles": files.train_singles, "validation": files.validation}
    if args.action == "build":
        for name, frame in frames.items():
            write_csv(paths[name], frame)
        print(summary(frames).to_string(index=False))
        return 0
    stale = [str(p) for name, p in paths.items()
             if not p.is_file() or p.read_text(encoding="utf-8") != frames[name].to_csv(index=False)]
    if stale:
        print(f"error: judge files differ from the frozen split: {stale}", file=sys.stderr)
        return 1
    print("judge files match the frozen split")
    return 0
