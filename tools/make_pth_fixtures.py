#!/usr/bin/env python3
"""Writes the `.pth` fixtures of Tests/ModelTests/Fixtures with the real torch.save, from
the micro model of make_reference.py (micro_config.json, micro_weights.safetensors):

- micro_checkpoint.pth: torch.save({"model": model.state_dict(), "epoch": 7, "args": Namespace(...)}),
  the layout of the official training checkpoints (state_dict of the official
  MaskedAutoencoderViT, fixed position embeddings included, an OrderedDict with _metadata);
- micro_encoder.pth: {"model": encoder tensors only}, the layout of the official
  mae_pretrain_vit_*.pth releases (no decoder, no mask_token), with the patch-embedding
  weight stored channels-last (non-contiguous strides) and the norm in float16;
- missing_model_key.pth: {"weights": state_dict} (no "model" entry);
- unknown_opcode.pth: a torch.save archive whose data.pkl is replaced by a pickle that
  uses INST (an opcode that would call os.system): the reader must refuse it.

    /work/torchvenv/bin/python tools/make_pth_fixtures.py

Needs torch, safetensors and timm 0.3.2 (tools/README.md); torchvision is not needed and
is stubbed out (timm imports it for its data pipeline only).
"""
import argparse
import collections
import io
import os
import sys
import zipfile
from unittest import mock

for name in ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.datasets"]:
    sys.modules.setdefault(name, mock.MagicMock())
sys.path.insert(0, os.path.dirname(__file__))

import torch
from safetensors.torch import load_file

import pytorch_mae

fixtures = os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelTests", "Fixtures")
config = pytorch_mae.load_config(os.path.join(fixtures, "micro_config.json"))
model = pytorch_mae.build_model(config)
model.load_state_dict(load_file(os.path.join(fixtures, "micro_weights.safetensors")), strict=True)
state = model.state_dict()

def save(name, value):
    path = os.path.join(fixtures, name)
    torch.save(value, path)
    print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes")

save("micro_checkpoint.pth", {"model": state, "epoch": 7,
                              "args": argparse.Namespace(model=config["name"], mask_ratio=0.75, norm_pix_loss=False)})

encoder = collections.OrderedDict()
for key, value in state.items():
    if key.startswith("decoder") or key == "mask_token":
        continue
    if key == "patch_embed.proj.weight":
        value = value.contiguous(memory_format=torch.channels_last)
        assert not value.is_contiguous()
    if key == "norm.weight":
        value = value.half()
    encoder[key] = value
save("micro_encoder.pth", {"model": encoder})

save("missing_model_key.pth", {"weights": state})

# torch.save's archive with its pickle replaced: INST 'os system' on the argument 'true'.
buffer = io.BytesIO()
torch.save({"model": {"x": torch.zeros(1)}}, buffer)
source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
path = os.path.join(fixtures, "unknown_opcode.pth")
with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as target:
    for item in source.infolist():
        data = source.read(item)
        if item.filename.endswith("/data.pkl"):
            data = b"\x80\x02(X\x04\x00\x00\x00trueios\nsystem\n."
        target.writestr(item, data)
print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes")
