"""Data-parallel training under msrun: one script, run on every rank.

    msrun --worker_num=2 --local_worker_num=2 --master_port=8129 --log_dir=LOGS --join=True \
        tools/distributed_train_check.py OUT_DIR [STEPS]

Every rank trains a tiny UNet on its shard of each global batch with gradients all-reduced by
``DiffusionTrainer(..., data_parallel=True)``, then writes its final weights to
``OUT_DIR/rank<r>.npz``; rank 0 also writes the checkpoint. The test compares the ranks (they must
be identical) and checks the weights changed.
"""
import sys
from pathlib import Path

import numpy as np

from mindscience_diffuser import DDIMScheduler
from mindscience_diffuser.models import UNet2DModel
from mindscience_diffuser.training import DiffusionTrainer, SyntheticFieldDataset


def main() -> None:
    out = Path(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    # Deliberately NOT seeding the init identically across ranks: the trainer averages the
    # initial weights over the ranks, so they start (and stay) identical anyway.
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",), mid_block_type=None, layers_per_block=1, norm_num_groups=4,
    )
    trainer = DiffusionTrainer(unet, DDIMScheduler(num_train_timesteps=100), batch_size=2, learning_rate=1e-3,
                               ema_decay=0.9, data_parallel=True, output_dir=out / "checkpoints")
    data = SyntheticFieldDataset("grf", num_samples=16, size=8, seed=0)
    trainer.train(data, steps)
    weights = {name: p.asnumpy() for name, p in unet.parameters_and_names()}
    np.savez(out / f"rank{trainer.rank}.npz", world_size=trainer.world_size, **weights)
    print(f"rank {trainer.rank}/{trainer.world_size} done, loss {trainer.history[-1][1]:.5f}", flush=True)


if __name__ == "__main__":
    main()
