"""The PyTorch peer of `mae bench step`: full training steps of the official model on the CPU.

    /work/torchvenv/bin/python tools/bench_pytorch_step.py --model mae_vit_tiny_patch4 \
        --input-size 32 --batch 64 --threads 1 --steps 10 [--norm-pix-loss]

Random normalised images in memory; each step zeroes the gradients, runs forward and
backward (mask ratio 0.75, masking noise drawn by the official torch.rand) and one AdamW
step with the recipe's settings (betas 0.9/0.95, weight decay 0.05 except 1-D tensors and
biases, lr 1.5e-4); --precision bf16 runs the forward under torch.autocast (bf16
products, the backward following them). One warm-up step, then --steps timed ones. The last line has the format
of `mae bench step`: img_per_s=X step_ms=Y gflops=0 peak_rss_mb=M (no FLOP count here).
"""

import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_mae import CONFIGS, build_model, config_dict, parameter_groups  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(CONFIGS))
    parser.add_argument("--input-size", type=int, default=None, help="image side (default: the model's)")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--norm-pix-loss", action="store_true")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: forward under torch.autocast('cpu', dtype=torch.bfloat16), as a user would")
    args = parser.parse_args()
    if args.batch < 1 or args.threads < 1 or args.steps < 1:
        parser.error("--batch, --threads and --steps must be at least 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = config_dict(args.model, args.input_size)
    model = build_model(config, norm_pix_loss=args.norm_pix_loss)
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=1.5e-4, betas=(0.9, 0.95))
    side = config["image_size"]
    images = torch.randn(args.batch, 3, side, side)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} model={args.model} "
          f"input={side} batch={args.batch} params={parameters} precision={args.precision}", flush=True)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss, _, _ = model(images, mask_ratio=args.mask_ratio)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        train_step()
    start = time.perf_counter()
    for index in range(args.steps):
        loss = train_step()
        if not torch.isfinite(torch.tensor(loss)):
            raise SystemExit(f"non-finite loss {loss} at step {index}")
    elapsed = time.perf_counter() - start
    step_ms = 1000 * elapsed / args.steps
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"img_per_s={args.batch * args.steps / elapsed:.2f} step_ms={step_ms:.1f} gflops=0 peak_rss_mb={peak_rss_mb:.0f}")


if __name__ == "__main__":
    main()
