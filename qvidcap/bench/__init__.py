"""Benchmarks that print numbers (throughput, latency, memory); never timed tests.

`qvidcap bench extraction|training|latency|reward|signal [options]`: each benchmark is a module here with
`add_arguments(parser)` and `main(args, config)`.
"""
from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "extraction": "qvidcap.bench.extraction",
    "training": "qvidcap.bench.training",
    "latency": "qvidcap.bench.latency",
    "reward": "qvidcap.bench.reward",
    "signal": "qvidcap.bench.signal",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (see its --help)")


def main(args: argparse.Namespace, config) -> int:
    module = importlib.import_module(BENCHMARKS[args.benchmark])
    parser = argparse.ArgumentParser(prog=f"qvidcap bench {args.benchmark}")
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(args.rest), config) or 0)
