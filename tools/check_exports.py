#!/usr/bin/env python3
"""Loads what `mae export` wrote into the PyTorch models, strictly:

- --mae FILE: the official MaskedAutoencoderViT (tools/pytorch_mae.py, timm 0.3.2 blocks),
  load_state_dict(strict=True);
- --timm FILE: timm's VisionTransformer with num_classes=0 at the model's size,
  load_state_dict(strict=True), then one forward pass.

    .build/release/mae export --checkpoint RUN_DIR --format mae --out /tmp/mae.safetensors
    .build/release/mae export --checkpoint RUN_DIR --format timm --out /tmp/timm.safetensors
    /work/torchvenv/bin/python tools/check_exports.py --model mae_vit_tiny_patch4 --mae /tmp/mae.safetensors --timm /tmp/timm.safetensors

Prints one line per check; exits 1 when a load fails. torchvision is stubbed out (timm
imports it for its data pipeline only).
"""
import argparse
import os
import sys
from unittest import mock

for name in ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.datasets"]:
    sys.modules.setdefault(name, mock.MagicMock())
sys.path.insert(0, os.path.dirname(__file__))

import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

import pytorch_mae

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--input-size", type=int)
parser.add_argument("--mae")
parser.add_argument("--timm")
args = parser.parse_args()
config = pytorch_mae.config_dict(args.model, args.input_size)

if args.mae:
    model = pytorch_mae.build_model(config)
    model.load_state_dict(load_file(args.mae), strict=True)
    print(f"mae: {args.mae} loads strictly into MaskedAutoencoderViT ({args.model})")
if args.timm:
    vit = VisionTransformer(img_size=config["image_size"], patch_size=config["patch_size"],
                            embed_dim=config["encoder_width"], depth=config["encoder_depth"],
                            num_heads=config["encoder_heads"], mlp_ratio=4, qkv_bias=True,
                            norm_layer=torch.nn.LayerNorm, num_classes=0)
    for module in vit.modules():  # the MAE blocks use LayerNorm eps 1e-6, as timm's ViT-B config
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-6
    vit.load_state_dict(load_file(args.timm), strict=True)
    features = vit(torch.zeros(1, 3, config["image_size"], config["image_size"]))
    print(f"timm: {args.timm} loads strictly into VisionTransformer(num_classes=0); features {tuple(features.shape)}")
