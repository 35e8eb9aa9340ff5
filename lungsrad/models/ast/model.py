"""AST: the Audio Spectrogram Transformer (AudioSet-pretrained DeiT-distilled ViT).

Re-implements YuanGongND/ast `src/models/ast_models.py` (`ASTModel` on timm 0.4.5's
`DistilledVisionTransformer`); the parameter names are the release checkpoint's without its
`module.v.` prefix (`module.mlp_head.*` becomes `mlp_head.*`), so release files load directly
(`weights.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lungsrad.config import MIN_NUM_CLASSES

PATCH_SIZE = 16  # AST's square patch convolution
NUM_PREFIX_TOKENS = 2  # cls and distillation tokens in front of the patch tokens


def patch_grid(
    num_mel_bins: int, input_frames: int, *, patch_stride: tuple[int, int] = (10, 10)
) -> tuple[int, int]:
    """(frequency patches, time patches) of a 16 x 16 convolution with `patch_stride`.

    128 mel bins x 1024 frames -> (12, 101); x 798 frames -> (12, 79).
    """
    freq_stride, time_stride = patch_stride
    return (
        (num_mel_bins - PATCH_SIZE) // freq_stride + 1,
        (input_frames - PATCH_SIZE) // time_stride + 1,
    )


class PatchEmbed(nn.Module):
    """One Conv2d(1, D, 16 x 16, stride) over the (mel = height, time = width) image."""

    def __init__(self, embed_dim: int, *, patch_stride: tuple[int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=PATCH_SIZE, stride=patch_stride)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: (batch, 1, mel, frames) -> patch map (batch, D, freq patches, time patches)."""
        return self.proj(image)


class Attention(nn.Module):
    """Multi-head self-attention; qkv features laid out (3, heads, head_dim), scale head_dim^-0.5.

    `forward` runs `F.scaled_dot_product_attention` (fused kernels on GPU);
    `forward_with_attention` computes the same result through explicit softmax matrices.
    """

    def __init__(self, dim: int, *, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (batch, N, D) -> q, k, v each (batch, heads, N, head_dim)."""
        batch, length, _ = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        """out: (batch, heads, N, head_dim) -> (batch, N, D) through `proj`."""
        batch, _, length, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(batch, length, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, N, D) -> (batch, N, D)."""
        q, k, v = self._heads(x)
        return self._merge(F.scaled_dot_product_attention(q, k, v))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (batch, N, D) -> (output (batch, N, D), attention (batch, heads, N, N))."""
        q, k, v = self._heads(x)
        attention = torch.softmax((q * self.head_dim**-0.5) @ k.transpose(-2, -1), dim=-1)
        return self._merge(attention @ v), attention


class Mlp(nn.Module):
    """Linear D -> hidden, exact GELU, Linear hidden -> D."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, N, D) -> (batch, N, D)."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN1(x)), then x + MLP(LN2(x)); LayerNorm eps 1e-6."""

    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, N, D) -> (batch, N, D)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` with explicit attention: (output (batch, N, D), (batch, heads, N, N))."""
        attended, attention = self.attn.forward_with_attention(self.norm1(x))
        x = x + attended
        return x + self.mlp(self.norm2(x)), attention


class AST(nn.Module):
    """AST backbone and head; input a log-mel fbank (batch, frames, mel_bins), output logits.

    Token sequence: [cls, dist, patch tokens in frequency-major order (index f * T + t)] plus
    `pos_embed`; after the blocks and `norm`, the cls and dist outputs are averaged and go
    through `mlp_head` (LayerNorm eps 1e-5, Linear). Surface for code above `models/`:
    `patch_embed`, `grid_shape` = (frequency patches, time patches), `blocks` (ModuleList),
    `embed` / `forward_from_embedding` / `forward_head` (as on DASS), `tokens_from_embedding`
    and `token_sequence` (the sequence after patch + positional embedding), `split_tokens` /
    `merge_tokens` (patch tokens <-> their (D, F, T) grid), `block(0, index)` and
    `attention_matrices` / `forward_with_attention` (explicit per-block attention).

    Args:
        num_classes: head outputs.
        embed_dim: token width D (768 for the AudioSet model).
        depth: number of blocks (12).
        num_heads: attention heads; must divide `embed_dim` (12).
        input_frames: fbank frames per example; fixes the time patches (798 -> 79).
        num_mel_bins: fbank mel bins (128 -> 12 frequency patches).
        patch_stride: (frequency, time) stride of the 16 x 16 patch convolution; the AudioSet
            weights were trained with (10, 10).
        mlp_ratio: hidden width of the MLPs over D.
    """

    def __init__(
        self,
        *,
        num_classes: int = 4,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        input_frames: int = 1024,
        num_mel_bins: int = 128,
        patch_stride: tuple[int, int] = (10, 10),
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if embed_dim < 1 or depth < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(
                f"AST: num_heads ({num_heads}) must divide embed_dim ({embed_dim}); depth "
                f"({depth}) must be positive"
            )
        if num_classes < MIN_NUM_CLASSES:
            raise ValueError(f"AST: num_classes must be >= {MIN_NUM_CLASSES}, got {num_classes}")
        patch_stride = (int(patch_stride[0]), int(patch_stride[1]))
        if min(patch_stride) < 1 or min(num_mel_bins, input_frames) < PATCH_SIZE:
            raise ValueError(
                f"AST: input of {input_frames} frames x {num_mel_bins} mel bins is smaller than "
                f"one {PATCH_SIZE} x {PATCH_SIZE} patch, or stride {patch_stride} is not positive"
            )
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.input_frames = input_frames
        self.num_mel_bins = num_mel_bins
        self.patch_stride = patch_stride
        self.grid_shape = patch_grid(num_mel_bins, input_frames, patch_stride=patch_stride)
        self.num_prefix_tokens = NUM_PREFIX_TOKENS
        num_tokens = NUM_PREFIX_TOKENS + self.grid_shape[0] * self.grid_shape[1]

        # Registration order = the release file's key order (cls, pos, dist, then submodules).
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_embed = PatchEmbed(embed_dim, patch_stride=patch_stride)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.mlp_head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # The reference's from-scratch init: timm's ViT init (tokens and pos_embed trunc-normal
        # 0.02, every block Linear trunc-normal 0.02 with zero bias, LayerNorms 1 / 0); AST's own
        # patch conv and mlp_head keep PyTorch's default init.
        if self.pos_embed.is_meta:
            return
        for parameter in (self.cls_token, self.pos_embed, self.dist_token):
            nn.init.trunc_normal_(parameter, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @property
    def depth(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)

    @property
    def depths(self) -> tuple[int]:
        """Blocks per stage: AST is one stage (stage 0) of `depth` blocks."""
        return (len(self.blocks),)

    @property
    def num_features(self) -> int:
        """Width of the pooled embedding (embed_dim)."""
        return self.embed_dim

    @property
    def num_patches(self) -> int:
        """Patch tokens: frequency patches x time patches."""
        return self.grid_shape[0] * self.grid_shape[1]

    def block(self, stage: int, index: int) -> Block:
        """Block `index` of stage 0, AST's only stage (output (batch, N, D); hooks allowed)."""
        if stage != 0 or not 0 <= index < len(self.blocks):
            raise ValueError(
                f"AST has no block ({stage}, {index}); it has one stage (0) of "
                f"{len(self.blocks)} blocks (index counts from 0)"
            )
        block = self.blocks[index]
        assert isinstance(block, Block)
        return block

    def map_block_grid(
        self, output: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Applies `function` to a block output viewed as its (frequency, time) grid.

        output: (batch, 2 + F * T, D) -> same shape. The patch tokens become the map
        (batch, D, F, T) (`split_tokens`), `function` maps it to a map of the same shape, and the
        result goes back in token order (`merge_tokens`); the cls and dist tokens pass untouched.
        """
        prefix, grid = self.split_tokens(output)
        mapped = function(grid)
        assert mapped.shape == grid.shape, (tuple(mapped.shape), tuple(grid.shape))
        return self.merge_tokens(prefix, mapped)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, mel_bins) -> patch map (batch, D, freq patches, time patches).

        The output of the patch convolution, before the cls/dist tokens and `pos_embed`: where
        Bae et al.'s patch-mix replaces patches.
        """
        expected = (self.input_frames, self.num_mel_bins)
        if x.dim() != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"AST built for (batch, {expected[0]} frames, {expected[1]} mel bins) got shape "
                f"{tuple(x.shape)}; the positional embedding fixes the input length"
            )
        image = x.unsqueeze(1).transpose(2, 3)  # (batch, 1, mel = height, frames = width)
        return self.patch_embed(image)

    def tokens_from_embedding(self, h: torch.Tensor) -> torch.Tensor:
        """h: (batch, D, F, T) patch map -> token sequence (batch, 2 + F * T, D).

        [cls, dist, patch (f, t) at index 2 + f * T + t] with `pos_embed` added.
        """
        batch = h.shape[0]
        prefix = torch.cat(
            (self.cls_token.expand(batch, -1, -1), self.dist_token.expand(batch, -1, -1)), dim=1
        )
        return self.merge_tokens(prefix, h) + self.pos_embed  # frequency-major: f * T + t

    def token_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, mel_bins) -> tokens after patch + positional embedding
        (batch, 2 + F * T, D), the input of the first block."""
        return self.tokens_from_embedding(self.embed(x))

    def split_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: (batch, 2 + F * T, D) -> (prefix (batch, 2, D), grid (batch, D, F, T)).

        The patch tokens viewed as their frequency x time grid (e.g. a block's output, for
        analysis or smoothing); `merge_tokens` is the inverse.
        """
        freq, time = self.grid_shape
        prefix, patches = tokens[:, :NUM_PREFIX_TOKENS], tokens[:, NUM_PREFIX_TOKENS:]
        grid = patches.transpose(1, 2).unflatten(2, (freq, time))
        return prefix, grid

    @staticmethod
    def merge_tokens(prefix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """prefix (batch, 2, D), grid (batch, D, F, T) -> tokens (batch, 2 + F * T, D)."""
        return torch.cat((prefix, grid.flatten(2).transpose(1, 2)), dim=1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (batch, N, D) after the blocks -> (batch, D): `norm`, then the mean of the
        cls and dist outputs."""
        tokens = self.norm(tokens)
        return (tokens[:, 0] + tokens[:, 1]) / 2

    def forward_from_embedding(self, h: torch.Tensor) -> torch.Tensor:
        """h: (batch, D, F, T) patch map -> pooled embedding (batch, num_features)."""
        tokens = self.tokens_from_embedding(h)
        for block in self.blocks:
            tokens = block(tokens)
        return self.pool(tokens)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, mel_bins) -> pooled embedding (batch, num_features)."""
        return self.forward_from_embedding(self.embed(x))

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled: (batch, num_features) -> logits (batch, num_classes)."""
        return self.mlp_head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, mel_bins) -> logits (batch, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The forward with explicit attention (for analysis; slower and memory-hungry).

        Returns:
            logits (batch, num_classes) and per block its attention (batch, heads, N, N),
            N = 2 + F * T (rows: queries, columns: keys; token order as `tokens_from_embedding`).
        """
        tokens = self.token_sequence(x)
        attentions = []
        for block in self.blocks:
            assert isinstance(block, Block)
            tokens, attention = block.forward_with_attention(tokens)
            attentions.append(attention)
        return self.forward_head(self.pool(tokens)), attentions

    def attention_matrices(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (batch, frames, mel_bins) -> per block (batch, heads, N, N) softmax attention."""
        return self.forward_with_attention(x)[1]
