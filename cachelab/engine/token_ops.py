"""Tensor operations of the token unit: choosing rows, merging them into kept outputs, k-means, ClusCa's propagation,
and restricting an attention call to the chosen queries (against every key and value)."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from ..models.specs import parameter_names

#: In a call's skipped units, ``full<partial``: the unit ran on some tokens; saved = cost(full) - cost(partial).
PARTIAL = "<"
#: Token signals a policy may declare in ``token_signals`` (``count``, ``age``, ``sharded`` are always given).
TOKEN_SIGNALS = ("input", "kept", "input_change", "clusters")
#: Modules of the text stream in joint blocks: always computed in full.
TEXT_MODULES = ("ff_context", "txt_mlp")
#: Families whose joint attention (and single-stream blocks) put the text tokens before the image tokens.
TEXT_FIRST = {"flux": True, "qwen_image": True, "cogvideox": True, "cogview4": True, "sd3": False, "hunyuan_video": False}
#: Families whose single-stream blocks concatenate text and image tokens before their modules.
SINGLE_STREAM = ("flux", "hunyuan_video")


def as_index(tokens, batch: int, device) -> torch.Tensor:
    index = torch.as_tensor(tokens, device=device, dtype=torch.long)
    if index.ndim == 1:
        index = index.expand(batch, -1)
    if index.ndim != 2 or index.shape[0] != batch:
        raise ValueError(f"Decision.tokens must be indices [tokens] or [batch, tokens], got {tuple(index.shape)} for batch {batch}")
    return index


def replace_argument(args, kwargs, name, value, module):
    if name in kwargs:
        return args, {**kwargs, name: value}
    names = parameter_names(type(module))
    position = names.index(name)
    if position < len(args):
        return (*args[:position], value, *args[position + 1:]), kwargs
    return args, {**kwargs, name: value}


def rows_at(result, positions):
    """The chosen rows of a module's output (the first element of a tuple: the image stream); the rest as it is."""
    first = result[0] if isinstance(result, tuple) else result
    rows = first.gather(1, positions[..., None].expand(-1, -1, first.shape[-1]))
    return (rows, *result[1:]) if isinstance(result, tuple) else rows


def add_streams(a, b):
    if isinstance(a, tuple):
        return tuple(None if x is None else x + y for x, y in zip(a, b))
    return a + b


def nbytes_of(value) -> int:
    if isinstance(value, (tuple, list)):
        return sum(nbytes_of(v) for v in value)
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0


def propagate(output, offset, length, chosen, fresh, labels, ratio):
    """ClusCa's propagation: every image token's newest output moves by ``ratio`` towards its cluster's fresh output
    (the sum of the cluster's computed tokens, which is their value for one token per cluster, as published)."""
    image = output[:, offset:offset + length]
    clusters = int(labels.max()) + 1
    picked = labels.gather(1, chosen)
    sums = torch.zeros(image.shape[0], clusters, image.shape[-1], dtype=image.dtype, device=image.device)
    sums.scatter_add_(1, picked[..., None].expand(-1, -1, image.shape[-1]), fresh.to(image.dtype))
    spread = sums.gather(1, labels[..., None].expand(-1, -1, image.shape[-1]))
    moved = spread * ratio + image * (1 - ratio)
    if offset == 0 and length == output.shape[1]:
        return moved
    return torch.cat([output[:, :offset], moved, output[:, offset + length:]], 1)


def kmeans(x: torch.Tensor, clusters: int, centroids: torch.Tensor | None = None, generator=None, iterations: int = 10):
    """Labels [B, N] and centroids [B, K, D] of ``x`` [B, N, D]: Lloyd's iterations under the L1 distance (ClusCa's
    setting), started from the given centroids (the previous clustering) or from ``clusters`` random tokens."""
    data = x.detach().float()
    batch, count, _ = data.shape
    if centroids is None:
        picks = torch.randint(0, count, (batch, clusters), generator=generator, device="cpu").to(x.device)
        centroids = data[torch.arange(batch, device=x.device)[:, None], picks]
    centroids = centroids.float()
    labels = None
    for _ in range(iterations):
        labels = torch.cdist(data, centroids, p=1).argmin(-1)
        one_hot = F.one_hot(labels, clusters).to(data.dtype)
        updated = one_hot.transpose(1, 2) @ data / (one_hot.sum(1)[..., None] + 1e-8)
        if torch.allclose(centroids, updated, rtol=1e-4):
            break
        centroids = updated
    return labels, centroids


# -- chosen queries against all keys and values ----------------------------------------------------------------


class query_subset:
    """Within: the attention of ``module`` computes only the queries at ``positions`` ([B, k] rows of its query
    sequence), against every key and value; the other rows of the attention product are zeros (the runtime takes the
    chosen rows of the module's output). Wraps ``dispatch_attention_fn`` in the processor's module ([B, S, H, D]) or
    ``torch.nn.functional.scaled_dot_product_attention`` ([B, H, S, D]) for the call."""

    def __init__(self, module, positions: torch.Tensor):
        self.positions = positions
        processor = getattr(module, "processor", None)
        self.namespace = sys.modules.get(type(processor).__module__) if processor is not None else None

    def __enter__(self):
        self.patched = []
        if self.namespace is not None and hasattr(self.namespace, "dispatch_attention_fn"):
            original = self.namespace.dispatch_attention_fn
            self.patched.append((self.namespace, "dispatch_attention_fn", original))
            self.namespace.dispatch_attention_fn = self._wrap(original, sequence_dim=1)
        original = F.scaled_dot_product_attention
        self.patched.append((F, "scaled_dot_product_attention", original))
        F.scaled_dot_product_attention = self._wrap(original, sequence_dim=2)
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self.patched):
            setattr(owner, name, original)

    def _wrap(self, original, sequence_dim: int):
        positions = self.positions

        def attention(query, key, value, *args, **kwargs):
            length = query.shape[sequence_dim]
            if positions.shape[0] != query.shape[0] or int(positions.max()) >= length:
                return original(query, key, value, *args, **kwargs)  # not this module's attention (a nested call)
            index = positions[:, :, None, None] if sequence_dim == 1 else positions[:, None, :, None]
            chosen = query.gather(sequence_dim, index.expand(*[s if d != sequence_dim else positions.shape[1]
                                                                  for d, s in enumerate(query.shape)]))
            mask = kwargs.get("attn_mask", args[0] if args else None)
            if isinstance(mask, torch.Tensor) and mask.ndim == 4 and mask.shape[-2] == length:
                mask = mask.gather(2, positions[:, None, :, None].expand(mask.shape[0], mask.shape[1], -1, mask.shape[-1])
                                   if mask.shape[0] == positions.shape[0] else positions[:1, None, :, None].expand(
                                       mask.shape[0], mask.shape[1], -1, mask.shape[-1]))
                if "attn_mask" in kwargs:
                    kwargs = {**kwargs, "attn_mask": mask}
                else:
                    args = (mask, *args[1:])
            out = original(chosen, key, value, *args, **kwargs)
            full_shape = list(out.shape)
            full_shape[sequence_dim] = length
            full = out.new_zeros(full_shape)
            out_index = index.expand(*[s if d != sequence_dim else positions.shape[1] for d, s in enumerate(out.shape)])
            return full.scatter(sequence_dim, out_index, out)

        return attention
