"""The PyTorch peer of `launch.sh --nodes N`: the official MAE model in DistributedDataParallel
over Gloo (loopback), N local processes, each on random normalised images held in memory.

    /work/torchvenv/bin/python tools/bench_pytorch_ddp.py --model mae_vit_base_patch16 \
        --workers 2 --batch 4 --threads 1 --steps 4

Each step zeroes the gradients, runs forward and backward (mask ratio 0.75; DDP all-reduces
its 25 MB buckets during the backward) and one AdamW step with the recipe's settings (betas
0.9/0.95, weight decay 0.05 except 1-D tensors and biases, lr 1.5e-4). --warmup steps, then
--steps timed ones; every step ends when all ranks finished it (DDP's all-reduce makes them
wait for each other). Rank 0 prints each timed step and, as its last line,
`img_per_s=X step_ms=Y` over all workers (the median step).
"""

import argparse
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_mae import CONFIGS, build_model, config_dict, parameter_groups  # noqa: E402


def worker(rank, args, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=args.workers)
    torch.manual_seed(0)  # every rank starts from the same weights, as DDP's broadcast would make them
    config = config_dict(args.model, args.input_size)
    model = DistributedDataParallel(build_model(config, norm_pix_loss=args.norm_pix_loss))
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model.module, 0.05), lr=1.5e-4, betas=(0.9, 0.95))
    side = config["image_size"]
    generator = torch.Generator().manual_seed(rank)
    images = torch.randn(args.batch, 3, side, side, generator=generator)
    if rank == 0:
        print(f"torch {torch.__version__} gloo workers={args.workers} threads={torch.get_num_threads()} "
              f"model={args.model} input={side} batch={args.batch} per worker", flush=True)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss, _, _ = model(images, mask_ratio=args.mask_ratio)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        train_step()
    dist.barrier()
    seconds = []
    for index in range(args.steps):
        start = time.perf_counter()
        loss = train_step()
        seconds.append(time.perf_counter() - start)
        if rank == 0:
            print(f"step {index + 1} loss {loss:.4f} seconds {seconds[-1]:.3f}", flush=True)
    # Every rank waited for the others in each step's all-reduce; the slowest rank's median is the job's.
    median = torch.tensor([statistics.median(seconds)])
    dist.all_reduce(median, op=dist.ReduceOp.MAX)
    if rank == 0:
        step = median.item()
        print(f"img_per_s={args.workers * args.batch / step:.2f} step_ms={1000 * step:.1f}", flush=True)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(CONFIGS))
    parser.add_argument("--input-size", type=int, default=None, help="image side (default: the model's)")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True, help="images per worker per step")
    parser.add_argument("--threads", type=int, required=True, help="threads per worker")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--norm-pix-loss", action="store_true")
    args = parser.parse_args()
    if min(args.workers, args.batch, args.threads, args.steps) < 1:
        parser.error("--workers, --batch, --threads and --steps must be at least 1")
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(worker, args=(args, port), nprocs=args.workers, join=True)


if __name__ == "__main__":
    main()
