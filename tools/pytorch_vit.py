"""The official fine-tuning model (facebookresearch/mae, models_vit.py) for producing reference values.

A tool, never a dependency of the Swift project or its tests. Our own small rewrite of
`models_vit.VisionTransformer` (timm 0.3.2's VisionTransformer with MAE's global pooling)
on timm 0.3.2's PatchEmbed and Block: the same modules, names, parameter order and
forward. `interpolate_pos_embed` follows util/pos_embed.py, `layer_decay_groups`
util/lr_decay.py. Run with /work/torchvenv/bin/python.
"""

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.layers import trunc_normal_
from timm.models.vision_transformer import Block, PatchEmbed


class VisionTransformer(nn.Module):
    """timm's ViT (learnt pos_embed, drop path linear over depth) with `global_pool`:
    the mean of the patch tokens through `fc_norm` (no final `norm`), or the class token after `norm`."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, drop_path_rate=0.0, global_pool=True,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6)):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        patch_count = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, patch_count + 1, embed_dim))
        rates = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList([
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=rates[i],
                  norm_layer=norm_layer)
            for i in range(depth)])
        self.global_pool = global_pool
        if not global_pool:
            self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        if global_pool:
            self.fc_norm = norm_layer(embed_dim)  # registered last, as models_vit adds it after timm's modules
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)
        trunc_normal_(self.head.weight, std=2e-5)  # main_finetune.py's reset of the head

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
        elif isinstance(module, nn.LayerNorm):
            nn.init.constant_(module.bias, 0)
            nn.init.constant_(module.weight, 1.0)

    def forward_features(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        if self.global_pool:
            return self.fc_norm(x[:, 1:, :].mean(dim=1))
        return self.norm(x)[:, 0]

    def forward(self, x):
        return self.head(self.forward_features(x))


def build_classifier(config, num_classes, global_pool, drop_path=0.0):
    """The classifier for a ModelConfig dict (the Swift JSON layout; the decoder sizes are unused)."""
    return VisionTransformer(
        img_size=config["image_size"], patch_size=config["patch_size"], in_chans=config.get("channels", 3),
        num_classes=num_classes, embed_dim=config["encoder_width"], depth=config["encoder_depth"],
        num_heads=config["encoder_heads"], mlp_ratio=config.get("mlp_ratio", 4), drop_path_rate=drop_path,
        global_pool=global_pool)


def soft_target_cross_entropy(logits, targets):
    """timm's SoftTargetCrossEntropy."""
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def smoothed_targets(labels, num_classes, smoothing):
    """timm mixup's one_hot with label smoothing: 1 - s + s/C on the label, s/C elsewhere."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off)
    targets.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)
    return targets


def interpolate_pos_embed(pos_embed, new_grid, extra_tokens=1):
    """util/pos_embed.interpolate_pos_embed on one tensor [1, extra + old², D] -> [1, extra + new², D]."""
    width = pos_embed.shape[-1]
    old_grid = int((pos_embed.shape[-2] - extra_tokens) ** 0.5)
    if old_grid == new_grid:
        return pos_embed
    extra = pos_embed[:, :extra_tokens]
    tokens = pos_embed[:, extra_tokens:].reshape(-1, old_grid, old_grid, width).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    tokens = tokens.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat((extra, tokens), dim=1)
