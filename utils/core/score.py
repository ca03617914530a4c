"""Command line scorer: `python -m utils.score --data CSV --submission CSV` prints a JSON object; with
`--baseline CSV` also the F1 difference to that submission and its 95% interval (label groups resampled).
Rows marked "Ignored" in a `Usage` column (Kaggle's solution files, the real-titles judge) are not scored."""

from __future__ import annotations

import argparse
import json
import sys

from utils.core.cli import boundary

from .data import read_postings, read_truth
from .metric import bootstrap_difference, row_scores, score
from .submission import read_submission


@boundary
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.score", description=__doc__)
    ap.add_argument("--data", required=True, help="postings CSV with label_group (the truth)")
    ap.add_argument("--submission", required=True, help="CSV with posting_id,matches")
    ap.add_argument("--baseline", help="a second submission: report F1(submission) - F1(baseline) with its interval")
    args = ap.parse_args(argv)
    ids = read_postings(args.data, require_labels=True)["posting_id"].to_numpy()
    labels, scored = read_truth(args.data, ids)
    matches = read_submission(args.submission, ids)
    base = read_submission(args.baseline, ids) if args.baseline else None
    result = score(matches, labels, scored).as_dict()
    if base is not None:
        result["baseline_f1"] = score(base, labels, scored).f1
        result["difference"] = bootstrap_difference(row_scores(matches, labels)[0][scored],
                                                    row_scores(base, labels)[0][scored], labels[scored])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
