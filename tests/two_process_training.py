"""One tiny synthetic training run, for tests/test_train.py to start under `torch.distributed.run`.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/two_process_training.py OUT BATCH [key=value ...]

Every process builds the same synthetic data (in its own folder, so no two write one cache) and calls
`train()`; the checkpoint and log land in OUT/outputs as in a one-process run.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_training import make_training_data, tiny_config  # noqa: E402

NO_DROPOUT = {"heads.dropout": 0.0, "qformer.dropout": 0.0, "decoder.word_dropout": 0.0}


def run(out: Path, overrides: dict, rank: int = 0):
    from qvidcap.runtime.env import Environment
    from qvidcap.training.train import train

    config = tiny_config(out, **{"train.epochs": 2, **NO_DROPOUT, **overrides})
    data = make_training_data(config, out / f"rank{rank}", num_train=8, num_validation=4)
    env = Environment("local", "cpu", 0, "", out / "data", out / "outputs", None)
    return train(config, env, data=data, resume=False)


def count_captioned_clips() -> dict:
    """Count the clips this process captions (to see that validation is shared between the processes)."""
    from qvidcap.model.captioner import QVidCap

    counted, real = {"clips": 0}, QVidCap.generate

    def generate(self, temporal, *args, **kwargs):
        counted["clips"] += len(temporal)
        return real(self, temporal, *args, **kwargs)

    QVidCap.generate = generate
    return counted


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    values = dict(item.split("=", 1) for item in sys.argv[2:])
    counted = count_captioned_clips()
    result = run(out, values, int(os.environ.get("RANK", "0")))
    print(f"rank {os.environ.get('RANK')}: {result.step} steps, {result.stopped}, {counted['clips']} clips captioned")
