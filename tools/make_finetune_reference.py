"""Writes the PyTorch fine-tuning fixtures of Tests/ModelTests/Fixtures (micro_finetune_*).

    /work/torchvenv/bin/python tools/make_finetune_reference.py [--out Tests/ModelTests/Fixtures]

The micro configuration of tools/make_reference.py (16 px, patch 4, 32-d, 2 blocks, 2 heads)
as a 5-class classifier (tools/pytorch_vit.py, the official models_vit.VisionTransformer),
seeded weights with every tensor perturbed so that biases, norms and the head are non-trivial,
three random images, labels with label smoothing 0.1 as soft targets, drop path off. One
forward and backward of soft-target cross-entropy, with global pooling and with the class
token. Expected values in float64 from the float32 weights and inputs, stored as F32.
A third case runs the global-pool weights with drop path 0.5 (rates 0 and 0.5 over the two
blocks) in training mode, timm's DropPath given fixed keep masks instead of torch.rand.

Files:
  micro_finetune_weights_global_pool.safetensors   the state_dict (fc_norm, no norm)
  micro_finetune_weights_cls_token.safetensors     the state_dict (norm, no fc_norm)
  micro_finetune_inputs.safetensors                images [3,3,16,16], targets [3,5], labels [3]
  micro_finetune_expected_global_pool.safetensors  loss [1], logits [3,5], every gradient by name
  micro_finetune_expected_cls_token.safetensors    the same with the class token
  micro_finetune_expected_drop_path.safetensors    global pool, drop path 0.5, 'drop_path_masks'
      [depth, 2, batch] (1 kept; block 0 has rate 0 and no DropPath), loss, logits, gradients
  micro_finetune_pos_embed.safetensors             util/pos_embed.interpolate_pos_embed of
      'sincos' (micro_weights' pos_embed, grid 4) and 'random' [1,17,32] to grids 6 and 3
      ('sincos_to6', 'random_to6', 'random_to3')
"""

import argparse
import copy
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_vit import build_classifier, interpolate_pos_embed, smoothed_targets, soft_target_cross_entropy  # noqa: E402
from timm.models.layers import DropPath  # noqa: E402

SEED = 20220112
CLASSES = 5
BATCH = 3
SMOOTHING = 0.1
DROP_PATH = 0.5
# Keep masks of block 1's attention and MLP branches per sample (block 0's rate is 0).
BLOCK1_MASKS = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]


def drop_path_with_masks(model, masks):
    """Makes each DropPath call (block order, attention then MLP) use the next given keep
    mask [B] as timm's random_tensor: x.div(keep_prob) * mask."""
    pending = list(masks)

    def forward(self, x):
        mask = pending.pop(0).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return x.div(1 - self.drop_prob) * mask

    for module in model.modules():
        if isinstance(module, DropPath):
            module.forward = forward.__get__(module)
    return pending


def step(model, images, targets):
    """One forward and backward pass; returns loss, logits and the gradients by name."""
    model.zero_grad(set_to_none=True)
    logits = model(images)
    loss = soft_target_cross_entropy(logits, targets)
    loss.backward()
    gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), logits.detach(), gradients


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "Tests", "ModelTests", "Fixtures"))
    args = parser.parse_args()
    with open(os.path.join(args.out, "micro_config.json")) as file:
        config = json.load(file)

    torch.manual_seed(SEED)
    side = config["image_size"]
    images = torch.randn(BATCH, 3, side, side)
    labels = torch.tensor([0, 3, 4])
    targets = smoothed_targets(labels, CLASSES, SMOOTHING)
    metadata = {"config": json.dumps(config), "seed": str(SEED), "classes": str(CLASSES),
                "smoothing": str(SMOOTHING), "source": "tools/make_finetune_reference.py"}
    save_file({"images": images, "targets": targets, "labels": labels.float()},
              os.path.join(args.out, "micro_finetune_inputs.safetensors"), metadata=metadata)

    for global_pool, suffix in [(True, "global_pool"), (False, "cls_token")]:
        model = build_classifier(config, CLASSES, global_pool)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
        save_file({name: t.contiguous() for name, t in model.state_dict().items()},
                  os.path.join(args.out, f"micro_finetune_weights_{suffix}.safetensors"),
                  metadata=dict(metadata, global_pool=str(global_pool).lower()))
        loss, logits, gradients = step(copy.deepcopy(model).double(), images.double(), targets.double())
        loss32, _, gradients32 = step(model, images, targets)
        tensors = {"loss": loss.reshape(1).float(), "logits": logits.float()}
        tensors.update({name: g.float() for name, g in gradients.items()})
        save_file(tensors, os.path.join(args.out, f"micro_finetune_expected_{suffix}.safetensors"),
                  metadata=dict(metadata, global_pool=str(global_pool).lower(), computed_in="float64"))
        worst = max((g32 - gradients[n].float()).abs().max().item() / max(gradients[n].abs().max().item(), 1e-30)
                    for n, g32 in gradients32.items())
        print(f"{suffix}: loss {loss.item():.9f} (float32 {loss32.item():.9f}); "
              f"float32 gradients worst max-abs/max-ref {worst:.3e}")

    sincos = load_file(os.path.join(args.out, "micro_weights.safetensors"))["pos_embed"]
    grid = side // config["patch_size"]
    random = torch.randn(1, grid * grid + 1, config["encoder_width"])
    tensors = {"sincos": sincos, "random": random,
               "sincos_to6": interpolate_pos_embed(sincos.double(), 6).float(),
               "random_to6": interpolate_pos_embed(random.double(), 6).float(),
               "random_to3": interpolate_pos_embed(random.double(), 3).float()}
    float32 = interpolate_pos_embed(random, 6)
    print(f"pos_embed 4 -> 6: float32 vs float64 max abs {(float32 - tensors['random_to6']).abs().max().item():.3e}")
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(args.out, "micro_finetune_pos_embed.safetensors"), metadata=metadata)

    # Drop path with given masks, the global-pool weights, training mode.
    weights = load_file(os.path.join(args.out, "micro_finetune_weights_global_pool.safetensors"))
    model = build_classifier(config, CLASSES, True, drop_path=DROP_PATH).double()
    model.load_state_dict({k: v.double() for k, v in weights.items()}, strict=True)
    model.train()
    masks = torch.tensor(BLOCK1_MASKS, dtype=torch.float64)
    pending = drop_path_with_masks(model, [masks[0], masks[1]])
    loss, logits, gradients = step(model, images.double(), targets.double())
    assert not pending, "every DropPath must have run once"
    all_masks = torch.cat([torch.ones(1, 2, BATCH), masks.view(1, 2, BATCH)]).float()
    tensors = {"loss": loss.reshape(1).float(), "logits": logits.float(), "drop_path_masks": all_masks}
    tensors.update({name: g.float() for name, g in gradients.items()})
    save_file(tensors, os.path.join(args.out, "micro_finetune_expected_drop_path.safetensors"),
              metadata=dict(metadata, global_pool="true", drop_path=str(DROP_PATH), computed_in="float64"))
    print(f"drop_path: loss {loss.item():.9f}")


if __name__ == "__main__":
    main()
