"""The `qvidcap` command: one subcommand per step of the study.

Each subcommand lives in the module that does the work, as two functions:
`add_arguments(parser)` for its own options and `main(args, config) -> int`. This file only adds the
options every step shares (profile, overrides, device) and dispatches.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from qvidcap.config import PROFILES, ConfigError, load_config

# subcommand -> (module that implements it, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("qvidcap.data.prepare", "generate the mini dataset or fetch VATEX from Kaggle"),
    "extract": ("qvidcap.features.extract", "extract motion, object and context features into the store"),
    "train": ("qvidcap.training.train", "train the captioner on stored features"),
    "train-scst": ("qvidcap.training.scst", "fine-tune the best CE checkpoint with self-critical training (CIDEr-D reward)"),
    "evaluate": ("qvidcap.evaluation.evaluate", "caption a split and score it with pycocoevalcap"),
    "caption": ("qvidcap.serving.inference", "caption video files with a trained checkpoint"),
    "serve": ("qvidcap.serving.serve", "serve POST /upload over HTTP"),
    "bench": ("qvidcap.bench", "print throughput benchmarks"),
    "kaggle": ("qvidcap.runtime.kaggle_kernel", "write or push the Kaggle notebook of the study"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvidcap", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--profile", default="smoke", choices=sorted(PROFILES), help="config profile (default: smoke)")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config value, e.g. --set train.epochs=2 (repeatable)")
        sub.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the profile's)")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            sub.set_defaults(module=None)
            continue
        module.add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.module is None:
        print(f"qvidcap {args.command}: not available in this version", file=sys.stderr)
        return 2
    try:
        config = load_config(args.profile, " ".join(args.overrides))
    except ConfigError as e:
        print(f"qvidcap: {e}", file=sys.stderr)
        return 2
    if args.device:
        config.device = args.device
    return int(args.module.main(args, config) or 0)


if __name__ == "__main__":
    sys.exit(main())
