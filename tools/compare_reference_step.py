"""Checks `mae reference-step` against the official PyTorch model on the same weights, images and noise.

    swift build -c release
    /work/torchvenv/bin/python tools/compare_reference_step.py --model mae_vit_tiny_patch4 --batch 2
    /work/torchvenv/bin/python tools/compare_reference_step.py --model mae_vit_base_patch16 --batch 2 --threads 2
    /work/torchvenv/bin/python tools/compare_reference_step.py --task finetune --model mae_vit_base_patch16 --classes 1000

With --task finetune the model is the fine-tuning classifier (tools/pytorch_vit.py, the official
models_vit.VisionTransformer; global pooling, or --cls-token), the inputs random images and
label-smoothed soft targets (--smoothing), drop path off; the outputs loss, logits and every gradient.

Seeded official weights (every trainable tensor perturbed by --perturb × N(0,1) so that biases and
LayerNorm parameters are non-trivial), random normalised images and uniform masking noise are
written as safetensors; `mae reference-step` computes loss, pred, mask and every gradient; PyTorch
computes the same in float64 (the exact answer) and in float32. For each output the table lists
the largest absolute difference from float64 and that difference relative to the largest
magnitude of the float64 tensor, for our float32 result and for PyTorch's float32 result side by side.

With --precision bf16, ours runs `mae reference-step --precision bf16` and PyTorch's column is the
float32 model under torch.autocast("cpu", dtype=torch.bfloat16): both against the float64 answer,
so the table shows how our bf16 products compare with PyTorch's own mixed precision.
"""

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_mae import CONFIGS, build_model, config_dict, load_config  # noqa: E402
from pytorch_vit import build_classifier, smoothed_targets, soft_target_cross_entropy  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def default_binary():
    for build in ("release", "debug"):
        path = os.path.join(ROOT, ".build", build, "mae")
        if os.path.exists(path):
            return path
    return os.path.join(ROOT, ".build", "release", "mae")


def step(model, images, noise, mask_ratio, norm_pix_loss):
    model.norm_pix_loss = norm_pix_loss
    model.zero_grad(set_to_none=True)
    loss, pred, mask = model(images, mask_ratio=mask_ratio, noise=noise)
    loss.backward()
    outputs = {"loss": loss.detach().reshape(1), "pred": pred.detach(), "mask": mask.detach()}
    outputs.update({name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad})
    return outputs


def finetune_step(model, images, targets):
    model.zero_grad(set_to_none=True)
    logits = model(images)
    loss = soft_target_cross_entropy(logits, targets)
    loss.backward()
    outputs = {"loss": loss.detach().reshape(1), "logits": logits.detach()}
    outputs.update({name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad})
    return outputs


def difference(value, reference):
    absolute = (value.double() - reference).abs().max().item() if reference.numel() else 0.0
    scale = reference.abs().max().item() if reference.numel() else 0.0
    return absolute, absolute / scale if scale > 0 else absolute


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(CONFIGS), help="a known model name")
    parser.add_argument("--config", help="a ModelConfig JSON file instead of --model")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb", type=float, default=0.02)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--norm-pix-loss", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: ours with --precision bf16, PyTorch under torch.autocast bfloat16")
    parser.add_argument("--mae", default=default_binary(), help="the mae executable (default: .build/release/mae)")
    parser.add_argument("--work", default=None, help="keep the safetensors files in this folder")
    parser.add_argument("--all", action="store_true", help="list every gradient, not only the worst ten")
    parser.add_argument("--task", choices=["pretrain", "finetune"], default="pretrain")
    parser.add_argument("--classes", type=int, default=10, help="finetune: number of classes")
    parser.add_argument("--smoothing", type=float, default=0.1, help="finetune: label smoothing of the targets")
    parser.add_argument("--cls-token", action="store_true", help="finetune: the class token instead of global pooling")
    args = parser.parse_args()
    if (args.model is None) == (args.config is None):
        parser.error("give exactly one of --model and --config")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = load_config(args.config) if args.config else config_dict(args.model, args.input_size)
    if args.config and args.input_size:
        config["image_size"] = args.input_size
    model = (build_classifier(config, args.classes, not args.cls_token) if args.task == "finetune"
             else build_model(config))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * args.perturb)
    side, patch = config["image_size"], config["patch_size"]
    images = torch.randn(args.batch, 3, side, side)
    noise = torch.rand(args.batch, (side // patch) ** 2)
    if args.task == "finetune":  # the soft targets take the noise's place
        noise = smoothed_targets(torch.randint(args.classes, (args.batch,)), args.classes, args.smoothing)

    work = args.work or tempfile.mkdtemp(prefix="mae-compare-")
    os.makedirs(work, exist_ok=True)
    try:
        compare(args, config, model, images, noise, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def compare(args, config, model, images, noise, work):
    side = config["image_size"]
    paths = {name: os.path.join(work, name + ".safetensors") for name in ("weights", "images", "noise", "out", "saved")}
    save_file({n: t.contiguous() for n, t in model.state_dict().items()}, paths["weights"])
    save_file({"images": images}, paths["images"])
    save_file({"noise": noise}, paths["noise"])
    command = [args.mae, "reference-step", "--weights", paths["weights"], "--images", paths["images"],
               "--out", paths["out"], "--threads", str(args.threads), "--save-weights", paths["saved"],
               "--precision", args.precision]
    if args.task == "finetune":
        save_file({"targets": noise}, paths["noise"])
        command += ["--task", "finetune", "--targets", paths["noise"]] + (["--cls-token"] if args.cls_token else [])
    else:
        command += ["--noise", paths["noise"], "--mask-ratio", str(args.mask_ratio)]
    if args.config:
        config_path = os.path.join(work, "config.json")
        with open(config_path, "w") as file:
            json.dump(config, file)
        command += ["--config", config_path]
    else:
        command += ["--model", args.model, "--input-size", str(side)]
    if args.norm_pix_loss:
        command.append("--norm-pix-loss")
    start = time.perf_counter()
    subprocess.run(command, check=True)
    swift_seconds = time.perf_counter() - start
    ours = load_file(paths["out"])

    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        if args.task == "finetune":
            torch32 = finetune_step(model, images, noise)
        else:
            torch32 = step(model, images, noise, args.mask_ratio, args.norm_pix_loss)
    torch_seconds = time.perf_counter() - start
    if args.task == "finetune":
        exact = finetune_step(copy.deepcopy(model).double(), images.double(), noise.double())
    else:
        exact = step(copy.deepcopy(model).double(), images.double(), noise.double(), args.mask_ratio, args.norm_pix_loss)

    missing = sorted(set(exact) - set(ours))
    extra = sorted(set(ours) - set(exact))
    if missing or extra:
        raise SystemExit(f"output names differ: missing {missing}, extra {extra}")
    rows = []
    for name, reference in exact.items():
        if tuple(ours[name].shape) != tuple(reference.shape):
            raise SystemExit(f"{name}: shape {list(ours[name].shape)}, expected {list(reference.shape)}")
        rows.append((name, *difference(ours[name], reference), *difference(torch32[name], reference)))

    name = config.get("name", args.model)
    setting = (f"task=finetune classes={args.classes} global_pool={not args.cls_token} smoothing={args.smoothing}"
               if args.task == "finetune" else f"mask_ratio={args.mask_ratio} norm_pix_loss={args.norm_pix_loss}")
    print(f"model={name} input={side} batch={args.batch} {setting} threads={args.threads} precision={args.precision} "
          f"(mae reference-step {swift_seconds:.2f} s incl. start-up, torch {args.precision} {torch_seconds:.2f} s)")
    print(f"loss: float64 {exact['loss'].item():.9f}  ours {ours['loss'].item():.9f}  torch {args.precision} {torch32['loss'].item():.9f}")
    header = f"{'tensor':42s} {'ours abs':>10s} {'ours rel':>10s} {'torch abs':>11s} {'torch rel':>11s}"
    print(header)
    output_names = ("loss", "logits", "pred", "mask")
    outputs = [r for r in rows if r[0] in output_names]
    gradients = sorted((r for r in rows if r[0] not in output_names), key=lambda r: -r[2])
    for row in outputs + (gradients if args.all else gradients[:10]):
        print(f"{row[0]:42s} {row[1]:10.3e} {row[2]:10.3e} {row[3]:11.3e} {row[4]:11.3e}")
    worst_ours = max(gradients, key=lambda r: r[2])
    worst_torch = max(gradients, key=lambda r: r[4])
    print(f"gradients: {len(gradients)} tensors; worst relative difference ours {worst_ours[2]:.3e} ({worst_ours[0]}), "
          f"torch {args.precision} {worst_torch[4]:.3e} ({worst_torch[0]})")
    if args.task == "finetune":
        reloaded = build_classifier(config, args.classes, not args.cls_token)
    else:
        print(f"mask identical: {bool(torch.equal(ours['mask'].double(), exact['mask']))}")
        reloaded = build_model(config)

    # The weights as saveWeights writes them must load strictly into the official model, unchanged.
    reloaded.load_state_dict(load_file(paths["saved"]), strict=True)
    same = all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))
    print(f"saveWeights file loads strictly into the official model: True; tensors bitwise equal: {same}")


if __name__ == "__main__":
    main()
