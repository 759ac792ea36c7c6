"""The official MAE model (facebookresearch/mae, models_mae.py) for producing reference values.

A tool, never a dependency of the Swift project or its tests. It follows the official
MaskedAutoencoderViT built from timm 0.3.2's PatchEmbed and Block, with one addition:
`forward` and `random_masking` accept an external `noise` tensor [N, L] so that the
mask is the same as the Swift model's (the official code draws it with torch.rand).
Run with /work/torchvenv/bin/python (torch CPU, timm 0.3.2 with the torch._six import
patched as the MAE README says).
"""

import json
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from timm.models.vision_transformer import Block, PatchEmbed


# ----------------------------------------------------------------------------------------
# Fixed 2-D sin-cos position embeddings (util/pos_embed.py), computed in float64.

def sincos_1d(width, positions):
    """[M, width]: the first half sin(pos * omega), the second half cos(pos * omega)."""
    assert width % 2 == 0
    omega = np.arange(width // 2, dtype=np.float64) / (width / 2.0)
    omega = 1.0 / 10000 ** omega
    angles = np.einsum("m,d->md", positions.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(width, grid_size, cls_token=False):
    """[(1 +) grid_size**2, width]; the first half encodes the column ("w goes first"),
    the second half the row; the cls row is all zeros."""
    assert width % 2 == 0
    rows = np.arange(grid_size, dtype=np.float64)
    columns = np.arange(grid_size, dtype=np.float64)
    grid = np.stack(np.meshgrid(columns, rows), axis=0)  # grid[0] varies along columns
    embedding = np.concatenate([sincos_1d(width // 2, grid[0]), sincos_1d(width // 2, grid[1])], axis=1)
    if cls_token:
        embedding = np.concatenate([np.zeros([1, width]), embedding], axis=0)
    return embedding


# ----------------------------------------------------------------------------------------
# The model.

class MaskedAutoencoderViT(nn.Module):
    """Masked autoencoder with a ViT encoder and a small ViT decoder (official layout and names)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3,
                 embed_dim=1024, depth=24, num_heads=16,
                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
                 mlp_ratio=4.0, norm_layer=nn.LayerNorm, norm_pix_loss=False):
        super().__init__()
        # Encoder.
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        patch_count = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, patch_count + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, qk_scale=None, norm_layer=norm_layer)
            for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        # Decoder.
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, patch_count + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, qk_scale=None, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans, bias=True)

        self.norm_pix_loss = norm_pix_loss
        self.initialize_weights()

    def initialize_weights(self):
        grid = int(self.patch_embed.num_patches ** 0.5)
        self.pos_embed.data.copy_(torch.from_numpy(
            sincos_2d(self.pos_embed.shape[-1], grid, cls_token=True)).float().unsqueeze(0))
        self.decoder_pos_embed.data.copy_(torch.from_numpy(
            sincos_2d(self.decoder_pos_embed.shape[-1], grid, cls_token=True)).float().unsqueeze(0))
        # The patch embedding is initialised like a Linear on its flattened [D, 3*p*p] view.
        weight = self.patch_embed.proj.weight.data
        torch.nn.init.xavier_uniform_(weight.view([weight.shape[0], -1]))
        torch.nn.init.normal_(self.cls_token, std=0.02)
        torch.nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
        elif isinstance(module, nn.LayerNorm):
            nn.init.constant_(module.bias, 0)
            nn.init.constant_(module.weight, 1.0)

    def patchify(self, imgs):
        """[N, 3, H, W] -> [N, L, p*p*3], inside a patch (row, column, channel)."""
        p = self.patch_embed.patch_size[0]
        assert imgs.shape[2] == imgs.shape[3] and imgs.shape[2] % p == 0
        h = w = imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], 3, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, p ** 2 * 3)

    def unpatchify(self, x):
        """[N, L, p*p*3] -> [N, 3, H, W]."""
        p = self.patch_embed.patch_size[0]
        h = w = int(x.shape[1] ** 0.5)
        assert h * w == x.shape[1]
        x = x.reshape(x.shape[0], h, w, p, p, 3)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], 3, h * p, w * p)

    def random_masking(self, x, mask_ratio, noise=None):
        """Keeps the int(L * (1 - mask_ratio)) tokens with the smallest noise.

        `noise` [N, L] is the addition to the official code; without it, torch.rand as there.
        Returns the kept tokens, the mask (1 = removed, original order) and ids_restore.
        """
        N, L, D = x.shape
        keep = int(L * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(N, L, device=x.device)
        assert noise.shape == (N, L), f"noise must be [{N}, {L}], got {list(noise.shape)}"
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small is kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L], device=x.device, dtype=x.dtype)
        mask[:, :keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(self, x, mask_ratio, noise=None):
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # without cls
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :1, :], x_], dim=1)  # cls back in front
        x = x + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)
        return x[:, 1:, :]

    def forward_loss(self, imgs, pred, mask):
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as torch's default
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)  # [N, L]
        return (loss * mask).sum() / mask.sum()  # removed patches only

    def forward(self, imgs, mask_ratio=0.75, noise=None):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask


# ----------------------------------------------------------------------------------------
# Configurations: the official three and the project's two small ones, plus a micro one.

CONFIGS = {
    # name: (default image size, patch, width, depth, heads, decoder width, depth, heads)
    "mae_vit_tiny_patch4": (32, 4, 192, 12, 3, 128, 4, 4),
    "mae_vit_small_patch8": (64, 8, 384, 12, 6, 256, 4, 8),
    "mae_vit_base_patch16": (224, 16, 768, 12, 12, 512, 8, 16),
    "mae_vit_large_patch16": (224, 16, 1024, 24, 16, 512, 8, 16),
    "mae_vit_huge_patch14": (224, 14, 1280, 32, 16, 512, 8, 16),
}


def config_dict(name, image_size=None):
    """A config in the Swift ModelConfig's JSON layout."""
    if name not in CONFIGS:
        raise SystemExit(f"unknown model '{name}'; known: {', '.join(CONFIGS)}")
    size, patch, width, depth, heads, dwidth, ddepth, dheads = CONFIGS[name]
    return {"name": name, "image_size": image_size or size, "patch_size": patch, "channels": 3,
            "encoder_width": width, "encoder_depth": depth, "encoder_heads": heads,
            "decoder_width": dwidth, "decoder_depth": ddepth, "decoder_heads": dheads, "mlp_ratio": 4}


def load_config(path):
    """A ModelConfig JSON file (as `mae reference-step --config` reads)."""
    with open(path) as file:
        return json.load(file)


def build_model(config, norm_pix_loss=False):
    """The official model for a config dict (see `config_dict`)."""
    return MaskedAutoencoderViT(
        img_size=config["image_size"], patch_size=config["patch_size"], in_chans=config.get("channels", 3),
        embed_dim=config["encoder_width"], depth=config["encoder_depth"], num_heads=config["encoder_heads"],
        decoder_embed_dim=config["decoder_width"], decoder_depth=config["decoder_depth"],
        decoder_num_heads=config["decoder_heads"], mlp_ratio=config.get("mlp_ratio", 4),
        norm_layer=partial(nn.LayerNorm, eps=1e-6), norm_pix_loss=norm_pix_loss)


def parameter_groups(model, weight_decay):
    """The recipe's AdamW groups (timm's add_weight_decay): no decay for 1-D tensors and biases."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
