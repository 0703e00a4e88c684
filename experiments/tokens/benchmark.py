"""Wall time of one module computed on a share of its tokens (gather, compute, scatter into the kept output: what
cachelab.engine.tokens does) against the whole module, on this machine. Prints figures; not a test.

    python experiments/tokens/benchmark.py [--dim 1024] [--tokens 256 1024 4096] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor

from cachelab.engine.tokens import query_subset


def best(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ff = FeedForward(args.dim, activation_fn="gelu-approximate").eval()
    heads = args.dim // 64
    attn = FluxAttention(query_dim=args.dim, heads=heads, dim_head=64, out_dim=args.dim, processor=FluxAttnProcessor()).eval()
    print(f"device cpu, {args.threads} thread(s), dim {args.dim}; speedup = whole module time / partial call time")
    print("| module | tokens | share | whole ms | partial ms | speedup |")
    print("|---|---|---|---|---|---|")
    with torch.no_grad():
        for count in args.tokens:
            x = torch.randn(1, count, args.dim)
            kept = ff(x)
            whole = best(lambda: ff(x))
            for share in args.shares:
                chosen = torch.randperm(count)[: max(1, int(share * count))][None]

                def partial():
                    rows = x.gather(1, chosen[..., None].expand(-1, -1, args.dim))
                    return kept.scatter(1, chosen[..., None].expand(-1, -1, kept.shape[-1]), ff(rows))

                t = best(partial)
                print(f"| ff | {count} | {share:.2f} | {whole * 1e3:.2f} | {t * 1e3:.2f} | {whole / t:.2f}x |")
            kept = attn(x)
            whole = best(lambda: attn(x))
            for share in args.shares:
                chosen = torch.randperm(count)[: max(1, int(share * count))][None]

                def partial_attention():
                    with query_subset(attn, chosen):
                        out = attn(x)
                    rows = out.gather(1, chosen[..., None].expand(-1, -1, args.dim))
                    return kept.scatter(1, chosen[..., None].expand(-1, -1, args.dim), rows)

                t = best(partial_attention)
                print(f"| attn | {count} | {share:.2f} | {whole * 1e3:.2f} | {t * 1e3:.2f} | {whole / t:.2f}x |")


if __name__ == "__main__":
    main()
