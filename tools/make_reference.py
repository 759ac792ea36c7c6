"""Writes the PyTorch reference fixtures of Tests/ModelTests/Fixtures.

    /work/torchvenv/bin/python tools/make_reference.py [--out Tests/ModelTests/Fixtures]

A micro configuration (16 px, patch 4, encoder 32-d/2 blocks/2 heads, decoder 16-d/1 block/
2 heads) small enough for fixtures of a few hundred KB, seeded weights perturbed so that
every bias and LayerNorm parameter is non-trivial, two random images and a fixed masking
noise. One forward and backward pass of the official model, with and without norm-pix
loss. The expected values are computed in float64 from the float32 weights and inputs
(the exact answer a float32 implementation approximates), then stored as F32.

Files:
  micro_config.json                  the ModelConfig (Swift JSON layout)
  micro_weights.safetensors          the state_dict, official names, incl. pos_embed/decoder_pos_embed
  micro_inputs.safetensors           images [2,3,16,16] (already normalised), noise [2,16]
  micro_expected.safetensors         loss [1], pred [2,16,48], mask [2,16], every gradient by name
  micro_expected_norm_pix.safetensors  the same with norm_pix_loss
  micro_expected_bf16.safetensors    loss, pred, mask and gradients of the float32 model under
                                     torch.autocast("cpu", dtype=torch.bfloat16) (no norm-pix loss),
                                     with metadata bf16_deviation: the largest deviation of that pass
                                     from the float64 answer (pred and each gradient, relative to the
                                     tensor's largest magnitude) and bf16_loss_deviation (the loss's
                                     relative deviation): the tolerances the bf16 test allows us
(Only the bf16 file is new; rerunning rewrites the others with the same tensors.)
"""

import argparse
import copy
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_mae import build_model  # noqa: E402

MICRO = {"name": "mae_micro_patch4", "image_size": 16, "patch_size": 4, "channels": 3,
         "encoder_width": 32, "encoder_depth": 2, "encoder_heads": 2,
         "decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2, "mlp_ratio": 4}
MASK_RATIO = 0.75
SEED = 20211111


def step(model, images, noise, norm_pix_loss):
    """One forward and backward pass; returns loss, pred, mask and the gradients by name."""
    model.norm_pix_loss = norm_pix_loss
    model.zero_grad(set_to_none=True)
    loss, pred, mask = model(images, mask_ratio=MASK_RATIO, noise=noise)
    loss.backward()
    gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), pred.detach(), mask.detach(), gradients


def relative_deviation(value, reference):
    """max |value − reference| / max |reference|, as the Swift tests measure it."""
    return (value.float() - reference.float()).abs().max().item() / max(reference.abs().max().item(), 1e-30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelTests", "Fixtures"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    torch.manual_seed(SEED)
    model = build_model(MICRO)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    side = MICRO["image_size"]
    patches = (side // MICRO["patch_size"]) ** 2
    images = torch.randn(2, 3, side, side)
    noise = torch.rand(2, patches)
    assert all(len(set(row.tolist())) == patches for row in noise), "noise values must be distinct"

    model64 = copy.deepcopy(model).double()
    with open(os.path.join(args.out, "micro_config.json"), "w") as file:
        json.dump(MICRO, file, indent=2)
        file.write("\n")
    metadata = {"config": json.dumps(MICRO), "seed": str(SEED), "source": "tools/make_reference.py"}
    save_file({name: t.contiguous() for name, t in model.state_dict().items()},
              os.path.join(args.out, "micro_weights.safetensors"), metadata=metadata)
    save_file({"images": images, "noise": noise}, os.path.join(args.out, "micro_inputs.safetensors"), metadata=metadata)

    for norm_pix_loss, file_name in [(False, "micro_expected.safetensors"), (True, "micro_expected_norm_pix.safetensors")]:
        loss, pred, mask, gradients = step(model64, images.double(), noise.double(), norm_pix_loss)
        loss32, pred32, _, gradients32 = step(model, images, noise, norm_pix_loss)
        tensors = {"loss": loss.reshape(1).float(), "pred": pred.float(), "mask": mask.float()}
        tensors.update({name: g.float() for name, g in gradients.items()})
        save_file(tensors, os.path.join(args.out, file_name),
                  metadata=dict(metadata, mask_ratio=str(MASK_RATIO), norm_pix_loss=str(norm_pix_loss).lower(),
                                computed_in="float64"))
        # How far PyTorch's own float32 pass is from the float64 answer: a scale for the tests' tolerances.
        worst = max((g32 - gradients[n].float()).abs().max().item() / max(gradients[n].abs().max().item(), 1e-30)
                    for n, g32 in gradients32.items())
        print(f"{file_name}: loss {loss.item():.9f} (float32 {loss32.item():.9f}); "
              f"float32 pred max abs diff {(pred32 - pred.float()).abs().max().item():.3e}; "
              f"float32 gradients worst max-abs/max-ref {worst:.3e}")

    # PyTorch's mixed precision on CPUs: the products of linear layers and attention in bf16.
    loss, pred, mask, gradients = step(model64, images.double(), noise.double(), False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, pred16, mask16, gradients16 = step(model, images, noise, False)
    deviations = {name: relative_deviation(g, gradients[name]) for name, g in gradients16.items()}
    deviations["pred"] = relative_deviation(pred16, pred)
    loss_deviation = abs(loss16.item() - loss.item()) / abs(loss.item())
    tensors = {"loss": loss16.reshape(1).float(), "pred": pred16.float(), "mask": mask16.float()}
    tensors.update({name: g.float() for name, g in gradients16.items()})
    save_file(tensors, os.path.join(args.out, "micro_expected_bf16.safetensors"),
              metadata=dict(metadata, mask_ratio=str(MASK_RATIO), norm_pix_loss="false",
                            computed_in="torch.autocast cpu bfloat16",
                            bf16_deviation=f"{max(deviations.values()):.3e}",
                            bf16_loss_deviation=f"{loss_deviation:.3e}"))
    worst_name = max(deviations, key=deviations.get)
    print(f"micro_expected_bf16.safetensors: loss {loss16.item():.9f} (float64 {loss.item():.9f}, "
          f"relative {loss_deviation:.3e}); pred {deviations['pred']:.3e}; worst {worst_name} "
          f"{deviations[worst_name]:.3e} max-abs/max-ref; median "
          f"{sorted(deviations.values())[len(deviations) // 2]:.3e}")


if __name__ == "__main__":
    main()
