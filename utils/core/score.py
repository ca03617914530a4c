"""Command line scorer: `python -m utils.score --data CSV --submission CSV` prints a JSON object."""

from __future__ import annotations

import argparse
import json
import sys

from .data import DataError, read_postings
from .metric import score
from .submission import read_submission


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.score", description=__doc__)
    ap.add_argument("--data", required=True, help="postings CSV with label_group (the truth)")
    ap.add_argument("--submission", required=True, help="CSV with posting_id,matches")
    args = ap.parse_args(argv)
    try:
        df = read_postings(args.data, require_labels=True)
        matches = read_submission(args.submission, df["posting_id"].to_numpy())
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(score(matches, df["label_group"].to_numpy()).as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
