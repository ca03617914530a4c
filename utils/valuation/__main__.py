"""`python -m utils.valuation predict --model DIR --listings new.csv`: price new listings with a saved HMG-Net.

Writes per listing the price, delta, the 80% interval (the level the model was calibrated at), the anchor used
and the feature groups that moved delta most (percentage points; positive lowers the price).
"""

from __future__ import annotations

import argparse
import sys
import time

from utils.core.cli import boundary
from utils.core.io import write_csv

from .listings import read_listings
from .saved import Valuer


@boundary
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.valuation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="price new listings with a saved model")
    pr.add_argument("--model", required=True, help="folder written by 06_hmgnet_valuation (<stage>/model)")
    pr.add_argument("--listings", required=True, help="CSV / TSV in the training data's format (its mapping applies)")
    pr.add_argument("--images", default=None, help="folder of the listings' photos (column image)")
    pr.add_argument("--out", default=None, help="CSV to write; default: print to stdout")
    pr.add_argument("--top", type=int, default=3, help="feature-group effects per listing (0: none)")
    args = ap.parse_args(argv)
    if args.top < 0:
        print(f"error: --top must be 0 or more, got {args.top}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    valuer = Valuer.load(args.model)
    df = read_listings(args.listings, mapping=valuer.mapping, require_price=False)
    result = valuer.predict(df, args.images, args.top)
    if args.out:
        write_csv(args.out, result)
    else:
        result.to_csv(sys.stdout, index=False)
    print(f"priced {len(result)} listing(s) in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
