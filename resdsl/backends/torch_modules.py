"""The torch modules resdsl builds that ``torch.nn`` lacks, and the one table that
turns a :class:`~resdsl.layers.Ctor` name into a class.

Each class here is also copied, by its source, into a standalone ``.py`` export,
so each imports only torch and refers to nothing else in resdsl.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by the stride, append zero channels. No parameters."""

    def __init__(self, stride: tuple[int, int], extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = x[:, :, :: self.stride[0], :: self.stride[1]]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


class ChannelConv(nn.Conv1d):
    """ECA's convolution across channels at every position (timm's EcaModule.conv):
    its weight is (1, 1, K), so checkpoints of EcaModule load into it."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, 1, c)
        return super().forward(rows).reshape(n, h, w, c).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al., 2016), as timm's DropPath."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerNorm2d(nn.LayerNorm):
    """A layer norm over channels at every position of an N x C x H x W tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GroupSoftmax(nn.Module):
    """A softmax across ``groups`` channel groups within each of ``cardinality`` cardinal
    groups, output group-major (resdsl.layers.Softmax); ``groups=1``: over the channels
    of each cardinal group."""

    def __init__(self, groups: int, cardinality: int) -> None:
        super().__init__()
        self.groups = groups
        self.cardinality = cardinality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.groups == 1:
            return x.reshape(n, self.cardinality, -1, *x.shape[2:]).softmax(2).reshape(x.shape)
        grouped = x.reshape(n, self.cardinality, self.groups, -1, *x.shape[2:])
        return grouped.softmax(2).transpose(1, 2).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, cardinality={self.cardinality}"


class ScaledStdConv2d(nn.Conv2d):
    """A convolution with scaled weight standardisation (Brock et al., 2021): each output
    channel's weights, less their mean, over their standard deviation (eps added to the
    variance), times a learned ``gain`` per channel and gamma / sqrt(fan-in). Its
    parameters are timm's ScaledStdConv2d's: ``weight``, ``bias``, ``gain`` (C x 1 x 1 x 1)."""

    def __init__(self, *args, gamma: float = 1.0, eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gamma = gamma
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def standardized_weight(self) -> torch.Tensor:
        rows = self.weight.flatten(1)
        variance, mean = torch.var_mean(rows, dim=1, unbiased=False, keepdim=True)
        factor = self.gain.flatten(1) * (self.gamma * rows.shape[1] ** -0.5) * torch.rsqrt(variance + self.eps)
        return ((rows - mean) * factor).view_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}, eps={self.eps}"


class Scale(nn.Module):
    """Multiplies by a constant."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Attention(nn.Module):
    """Multi-head self-attention in timm's layout (``qkv``, ``q_norm``, ``k_norm``,
    ``proj``), computed by ``scaled_dot_product_attention``. Leading axes before the
    tokens (windows) are attended separately. On a feature map (``feature_map=(H, W)``)
    the H W positions are the tokens and ``qkv`` and ``proj`` are 1x1 convolutions, as
    timm's 2-D attention modules (BottleneckAttn, Attention2d) have them; ``proj=False``
    leaves the heads' values as the output (BottleneckAttn); ``rel_pos="logits"`` adds
    each query's relative position logits, tables ``pos_embed.height_rel`` and
    ``pos_embed.width_rel`` (timm's PosEmbedRel); ``rel_pos="bias"`` a learned bias per
    head and offset, ``rel_pos.relative_position_bias_table`` (timm's RelPosBias).
    ``out`` is proj's output width (Attention2d's dim_out), ``head_first`` qkv's channels
    grouped by head (each head's q, k, v together: Attention2d's head_first)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_bias: bool = True,
        proj: bool = True,
        feature_map: tuple[int, int] | None = None,
        rel_pos: str = "none",
        out: int | None = None,
        head_first: bool = False,
        window: tuple[int, int] | None = None,
        shift: tuple[int, int] = (0, 0),
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self._init_windows(window, shift, grid)  # first: timm's WindowAttention registers its table before qkv
        inner = heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.feature_map, self.position, self.head_first = feature_map, rel_pos, head_first
        self._map_layout(dim, inner, qkv_bias, proj, proj_bias, out or dim)
        if rel_pos == "logits":
            height, width = feature_map  # type: ignore[misc]
            self.pos_embed = nn.ParameterDict(
                {
                    "height_rel": nn.Parameter(torch.zeros(2 * height - 1, head_dim)),
                    "width_rel": nn.Parameter(torch.zeros(2 * width - 1, head_dim)),
                }
            )
        if rel_pos == "bias":
            height, width = feature_map  # type: ignore[misc]
            table = torch.zeros((2 * height - 1) * (2 * width - 1), heads)
            self.rel_pos = nn.ParameterDict({"relative_position_bias_table": nn.Parameter(table)})
        self.proj = self._modules.pop("proj")  # after the position tables, where timm registers proj

    def _map_layout(self, dim: int, inner: int, qkv_bias: bool, proj: bool, proj_bias: bool, out: int) -> None:
        # Replacing a registered child keeps its place, so the keys' order stays timm's.
        if self.feature_map is not None:
            self.qkv = nn.Conv2d(dim, 3 * inner, 1, bias=qkv_bias)
            self.proj = nn.Conv2d(inner, out, 1, bias=proj_bias)
        elif out != dim:
            self.proj = nn.Linear(inner, out, bias=proj_bias)
        if not proj:
            self.proj = nn.Identity()

    def _relative_logits(self, q: torch.Tensor) -> torch.Tensor:
        """L[i, j] = q_i . (height_rel[y_j - y_i + H - 1] + width_rel[x_j - x_i + W - 1]):
        one product per axis against the whole table, then each query's offsets picked out."""
        height, width = self.feature_map  # type: ignore[misc]
        batch, heads = q.shape[:2]
        q = q.reshape(batch, heads, height, width, -1)
        index_w = torch.arange(width, device=q.device)
        index_w = (index_w[None, :] - index_w[:, None] + width - 1).expand(batch, heads, height, width, width)
        along_w = (q @ self.pos_embed["width_rel"].transpose(0, 1)).gather(-1, index_w)  # b h yq xq xk
        index_h = torch.arange(height, device=q.device)
        index_h = (index_h[None, :] - index_h[:, None] + height - 1).expand(batch, heads, width, height, height)
        along_h = (q.transpose(2, 3) @ self.pos_embed["height_rel"].transpose(0, 1)).gather(-1, index_h)  # b h xq yq yk
        logits = along_h.transpose(2, 3)[..., None] + along_w[..., None, :]  # b h yq xq yk xk
        return logits.reshape(batch, heads, height * width, height * width)

    def _relative_bias(self) -> torch.Tensor:
        """B[h, i, j] = table[(y_i - y_j + H - 1) (2 W - 1) + x_i - x_j + W - 1, h]."""
        height, width = self.feature_map  # type: ignore[misc]
        table = self.rel_pos["relative_position_bias_table"]
        rows = torch.arange(height, device=table.device).repeat_interleave(width)
        cols = torch.arange(width, device=table.device).repeat(height)
        index = (
            (rows[:, None] - rows[None, :] + height - 1) * (2 * width - 1) + cols[:, None] - cols[None, :] + width - 1
        )
        return table[index].permute(2, 0, 1)

    def _qkv(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        """qkv's output with its channels as q, k, v, each heads x head_dim."""
        qkv = self.qkv(x)
        if self.head_first:
            axis %= qkv.dim()
            qkv = qkv.unflatten(axis, (self.heads, 3, self.head_dim)).transpose(axis, axis + 1).flatten(axis, axis + 2)
        return qkv

    def _forward_map(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        qkv = self._qkv(x, 1).reshape(batch, 3, self.heads, self.head_dim, height * width).transpose(-1, -2)
        q, k, v = qkv.unbind(1)
        q, k = self.q_norm(q), self.k_norm(k)
        bias = self._relative_logits(q) if self.position == "logits" else None
        bias = self._relative_bias() if self.position == "bias" else bias
        x = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.transpose(-1, -2).reshape(batch, self.heads * self.head_dim, height, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is not None:
            return self._windowed(x)
        if self.feature_map is not None:
            return self._forward_map(x)
        # Axes counted from the front (ONNX's exporter writes a negative one into a Transpose's
        # permutation, which ONNX Runtime refuses), and no size read as a Python number (an
        # export with a dynamic batch would keep the example's as a constant).
        axis = x.dim() - 2  # the tokens' axis
        qkv = self._qkv(x, -1).unflatten(-1, (3, self.heads, self.head_dim))
        q, k, v = (part.transpose(axis, axis + 1) for part in qkv.unbind(axis + 1))  # ... x heads x N x d
        q, k = self.q_norm(q), self.k_norm(k)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(axis, axis + 1).flatten(axis + 1))

    def _init_windows(
        self, window: tuple[int, int] | None, shift: tuple[int, int], grid: tuple[int, int] | None
    ) -> None:
        """Swin's windows (timm's WindowAttention and SwinTransformerBlock): a relative
        position bias table. Its index and the shifted windows' mask are constants that
        checkpoints do not hold (timm's buffers are not persistent): computed on first use
        on each device, not buffers, which a model built on the meta device and then
        loaded would leave unset."""
        self.window, self.shift, self.grid = window, shift, grid
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor | None]] = {}
        if window is not None:
            table = torch.zeros((2 * window[0] - 1) * (2 * window[1] - 1), self.heads)
            self.relative_position_bias_table = nn.Parameter(table)

    def _window_constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The relative position index (area x area) and the shifted windows' mask
        (windows x area x area, 0 or -100), or None without a shift."""
        if device in self._constants:
            return self._constants[device]
        (win_h, win_w), shift = self.window, self.shift
        coords = torch.stack(
            torch.meshgrid(torch.arange(win_h, device=device), torch.arange(win_w, device=device), indexing="ij")
        ).flatten(1)
        relative = coords[:, :, None] - coords[:, None, :]
        index = ((relative[0] + win_h - 1) * (2 * win_w - 1) + relative[1] + win_w - 1).flatten()
        mask = None
        if any(shift):
            # The shifted grid's regions (timm's img_mask): tokens of different ones never meet.
            padded = (-(-self.grid[0] // win_h) * win_h, -(-self.grid[1] // win_w) * win_w)
            region = torch.zeros(padded, device=device)
            for axis, (size, win, moved) in enumerate(zip(padded, self.window, shift)):
                if moved:
                    steps = torch.arange(size, device=device)
                    part = (steps >= size - win).float() + (steps >= size - moved).float()
                    region = region + (3 ** (1 - axis)) * (part[:, None] if axis == 0 else part[None, :])
            windows = region.view(padded[0] // win_h, win_h, padded[1] // win_w, win_w).transpose(1, 2)
            windows = windows.reshape(-1, win_h * win_w)
            mask = (windows[:, None, :] != windows[:, :, None]).float() * -100.0  # timm's -100, not -inf
        self._constants[device] = (index, mask)
        return index, mask

    def _windowed(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        (height, width), (win_h, win_w), (shift_h, shift_w) = self.grid, self.window, self.shift
        x = x.view(batch, height, width, dim)
        if shift_h or shift_w:
            x = torch.roll(x, (-shift_h, -shift_w), (1, 2))
        pad_h, pad_w = -height % win_h, -width % win_w
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        rows, cols, area = (height + pad_h) // win_h, (width + pad_w) // win_w, win_h * win_w
        windows = x.view(batch, rows, win_h, cols, win_w, dim).transpose(2, 3).reshape(batch, rows * cols, area, dim)
        qkv = self.qkv(windows).reshape(batch, rows * cols, area, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # batch x windows x heads x area x head_dim
        q, k = self.q_norm(q), self.k_norm(k)
        index, mask = self._window_constants(x.device)
        bias = self.relative_position_bias_table[index].view(area, area, -1).permute(2, 0, 1)
        if mask is not None:
            bias = bias + mask.unsqueeze(1)  # windows x heads x area x area
        x = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        x = self.proj(x.transpose(-2, -3).reshape(batch, rows * cols, area, self.heads * self.head_dim))
        x = x.view(batch, rows, cols, win_h, win_w, dim).transpose(2, 3).reshape(batch, rows * win_h, cols * win_w, dim)
        x = x[:, :height, :width]
        if shift_h or shift_w:
            x = torch.roll(x, (shift_h, shift_w), (1, 2))
        return x.reshape(batch, tokens, dim)


class MergePatches(nn.Module):
    """Swin's patch merging, less its norm and linear layer (timm's PatchMerging): each
    patch of a grid of B x N x C tokens concatenated into one token, in timm's order."""

    def __init__(self, grid: tuple[int, int], size: tuple[int, int]) -> None:
        super().__init__()
        self.grid, self.size = grid, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x.shape
        (height, width), (step_h, step_w) = self.grid, self.size
        x = x.view(batch, height, width, dim)
        pad_h, pad_w = -height % step_h, -width % step_w
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        rows, cols = (height + pad_h) // step_h, (width + pad_w) // step_w
        x = x.reshape(batch, rows, step_h, cols, step_w, dim).permute(0, 1, 3, 4, 2, 5)
        return x.reshape(batch, rows * cols, step_h * step_w * dim)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, size={self.size}"


class SpatialReductionAttention(nn.Module):
    """PVT v2's attention in timm's layout (pvt_v2.Attention): queries from the tokens
    (``q``); keys and values (``kv``) from the tokens' ``grid`` reduced by an R x R
    convolution of stride R (``sr``) and a layer norm (``norm``) where R > 1, else from
    the tokens themselves; ``proj``. Computed by ``scaled_dot_product_attention``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        grid: tuple[int, int],
        sr_ratio: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.heads, self.head_dim, self.grid = heads, head_dim, grid
        inner = heads * head_dim
        # timm's registration order (q, kv, proj, sr, norm) is the state_dict's key order.
        self.q = nn.Linear(dim, inner, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * inner, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio) if sr_ratio > 1 else None
        self.norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No size read as a Python number: an ONNX export (dynamic batch) would keep the
        # example's batch as a constant.
        q = self.q(x).unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)
        if self.sr is not None:
            reduced = self.sr(x.transpose(1, 2).unflatten(2, tuple(self.grid)))
            x = self.norm(reduced.flatten(2).transpose(1, 2))
        kv = self.kv(x).unflatten(-1, (2, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).flatten(2))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, grid={self.grid}"


def full_parameter(shape: tuple[int, ...], value: float) -> nn.Parameter:
    """A parameter that is not a module's (layer scale's ``gamma``), filled with `value`."""
    return nn.Parameter(torch.full(shape, value))


class Container(nn.Module):
    """A module that only holds others: a path segment of a dotted name (``conv1`` in
    ``conv1.0``). It is never called."""


class Stage(nn.Sequential):
    """A stage's blocks. Activation checkpointing ("stage" or "block") trades compute
    for memory when training: activations inside are recomputed in backward. The
    mode is a plain attribute fixed at build time, so tracing sees a constant."""

    def __init__(self, *blocks: nn.Module, checkpoint: str = "none") -> None:
        super().__init__(*blocks)
        self.checkpoint = checkpoint

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint == "none" or not (self.training and torch.is_grad_enabled()):
            return self._blocks(x)
        if self.checkpoint == "stage":
            return _checkpoint(self._blocks, x, use_reentrant=False)
        for block in self:
            x = _checkpoint(block, x, use_reentrant=False)
        return x


#: Classes a Ctor may name besides torch.nn's own ("nn.Conv2d").
CUSTOM_MODULES: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        ZeroPadShortcut,
        ChannelConv,
        Attention,
        SpatialReductionAttention,
        MergePatches,
        DropPath,
        LayerNorm2d,
        GroupSoftmax,
        ScaledStdConv2d,
        Scale,
        Container,
        Stage,
    )
}
#: Factories a Ctor may name for a node that is one tensor, not a module (Layer.holds_tensor).
TENSOR_FACTORIES = {"full_parameter": full_parameter}


def resolve(name: str) -> type[nn.Module]:
    """The class a Ctor names: ``nn.X`` from torch.nn, or one of :data:`CUSTOM_MODULES`
    (or the factory of :data:`TENSOR_FACTORIES`). Names come from resdsl's layer kinds,
    never from a spec."""
    if name in TENSOR_FACTORIES:
        return TENSOR_FACTORIES[name]  # type: ignore[return-value]
    cls = vars(nn).get(name[3:]) if name.startswith("nn.") else CUSTOM_MODULES.get(name)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise KeyError(f"no module class {name!r}")
    return cls
