"""Command line of the generators: `python -m utils.synth shopee --out DIR --groups N --seed S`, `... market [--mode
independent|aligned]`."""

from __future__ import annotations

import argparse
import json
import sys
import time

from utils.core.cli import boundary


@boundary
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.synth")
    sub = ap.add_subparsers(dest="kind", required=True)
    sh = sub.add_parser("shopee", help="Shopee-like postings with images")
    sh.add_argument("--out", required=True, help="output folder")
    sh.add_argument("--groups", type=int, default=600, help="label groups in train + test")
    sh.add_argument("--seed", type=int, default=0)
    sh.add_argument("--test-share", type=float, default=0.3, help="share of product families put in test")
    sh.add_argument("--workers", type=int, default=None,
                    help="processes rendering photos (default: every core); the files do not depend on it")
    mk = sub.add_parser("market", help="second-hand listings with photos and the recorded true depreciation")
    mk.add_argument("--out", required=True, help="output folder")
    mk.add_argument("--n", type=int, default=3000, help="listings")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--defect-rate", type=float, default=0.45, help="share of listings with a defect")
    mk.add_argument("--noise-sd", type=float, default=None,
                    help="noise sd: added to delta (aligned, default 0.03) or to log price (independent, default 0.1)")
    mk.add_argument("--mode", default="independent",
                    help="pricing: independent (not the model's form; default) or aligned (the model's own form)")
    return _generate(ap.parse_args(argv))  # impossible sizes and shares: the boundary's one line, exit 2


def _generate(args: argparse.Namespace) -> int:
    shares = {"--test-share": getattr(args, "test_share", 0.5), "--defect-rate": getattr(args, "defect_rate", 0.5)}
    for flag, value in shares.items():
        if not 0 < value < 1:
            raise ValueError(f"{flag} must be between 0 and 1, got {value}")
    t0 = time.perf_counter()
    if args.kind == "market":
        from .market import generate as generate_market

        summary = generate_market(args.out, n=args.n, seed=args.seed, defect_rate=args.defect_rate,
                                  noise_sd=args.noise_sd, mode=args.mode)
        print(json.dumps({**summary, "seconds": round(time.perf_counter() - t0, 1)}))
        return 0
    from .shopee import generate

    summary = generate(args.out, groups=args.groups, seed=args.seed, test_share=args.test_share, workers=args.workers)
    print(json.dumps({**summary, "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
