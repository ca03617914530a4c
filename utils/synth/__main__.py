"""Command line of the generators: `python -m utils.synth shopee --out DIR --groups N --seed S`."""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.synth")
    sub = ap.add_subparsers(dest="kind", required=True)
    sh = sub.add_parser("shopee", help="Shopee-like postings with images")
    sh.add_argument("--out", required=True, help="output folder")
    sh.add_argument("--groups", type=int, default=600, help="label groups in train + test")
    sh.add_argument("--seed", type=int, default=0)
    sh.add_argument("--test-share", type=float, default=0.3, help="share of product families put in test")
    args = ap.parse_args(argv)
    from .shopee import generate

    t0 = time.perf_counter()
    summary = generate(args.out, groups=args.groups, seed=args.seed, test_share=args.test_share)
    print(json.dumps({**summary, "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
