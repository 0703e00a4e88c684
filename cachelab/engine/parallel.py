"""Context parallelism: the one module of cachelab that calls ``torch.distributed``.

Under diffusers' context parallelism (``transformer.enable_parallelism(config=ContextParallelConfig(...))``)
every rank runs the transformer on its own shard of the sequence, so a signal computed from a block's
tensors differs a little from rank to rank. A rank that skipped blocks its peers computed would wait
forever in their next all-to-all. Two rules keep every rank in step:

- statistics are reduced: ``reduce_sums`` adds partial sums (``sum |x - ref|``, ``sum |ref|``, ...) over
  the ranks, so ``relative_l1`` and the Gram matrices of plans equal their one-process values;
- decisions are agreed: the executor asks the policy on every rank, then ``Reduction.agree`` exchanges
  the answers (and any error) in one scalar-sized message, so all ranks act alike whatever the policy did.

Every message inside a decision is tagged with what the rank is doing, so ranks whose policies took
different paths (one reduced statistics, another already answered) fail together with ``RanksDiverged``
instead of waiting for each other. Alone (no context parallelism) everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import time

import torch

log = logging.getLogger(__name__)

_SUMS, _DECISION = 1.0, 2.0
_active: contextvars.ContextVar["Reduction | None"] = contextvars.ContextVar("cachelab_reduction", default=None)


class RanksDiverged(RuntimeError):
    """The ranks of one generation took different paths through a policy; every rank raises it."""


def group_of(transformer: torch.nn.Module):
    """The process group of the transformer's context parallelism, or None when it runs on one process."""
    config = getattr(transformer, "_parallel_config", None)
    cp = getattr(config, "context_parallel_config", None)
    mesh = getattr(cp, "_flattened_mesh", None)
    if mesh is None or mesh.size() == 1:
        return None
    return mesh.get_group()


class Reduction:
    """Sums and decisions over the ranks of one process group, identical bytes on every rank."""

    def __init__(self, group, width: int = 8):
        dist = torch.distributed
        self.group, self.size = group, dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        nccl = "nccl" in str(dist.get_backend(group))
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self.width = width
        self.in_decision = False
        self.disagreements = 0
        self.messages, self.seconds = 0, 0.0  # all-gathers made, and the wall time spent in them

    def _gather(self, vector: torch.Tensor) -> torch.Tensor:
        """[ranks, len(vector)]: every rank's vector (all-gather, then read in rank order on every rank)."""
        start = time.perf_counter()
        vector = vector.to(self.device, torch.float64).contiguous()
        parts = [torch.empty_like(vector) for _ in range(self.size)]
        torch.distributed.all_gather(parts, vector, group=self.group)
        gathered = torch.stack(parts).cpu()
        self.messages += 1
        self.seconds += time.perf_counter() - start
        return gathered

    def _exchange(self, tag: float, payload: torch.Tensor) -> torch.Tensor:
        """Inside a decision: one tagged message per rank; every rank raises if the tags differ."""
        head = torch.zeros(self.width + 2, dtype=torch.float64)
        head[0], head[1] = tag, payload.numel()
        head[2:2 + min(payload.numel(), self.width)] = payload[: self.width]
        rows = self._gather(head)
        if not bool((rows[:, 0] == tag).all()) or not bool((rows[:, 1] == rows[0, 1]).all()):
            doing = {_SUMS: "reducing statistics", _DECISION: "answering"}
            what = ", ".join(f"rank {r}: {doing.get(float(t), 'unknown')}" for r, t in enumerate(rows[:, 0].tolist()))
            raise RanksDiverged(
                f"the ranks took different paths through the policy ({what}): a policy must reduce the same "
                "statistics on every rank (never branch on a value read from its own shard before reducing it)"
            )
        if payload.numel() <= self.width:
            return rows[:, 2:2 + payload.numel()]
        return self._gather(payload.reshape(-1))

    def sums(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (float64, the same on every rank), shaped like ``values``."""
        flat = values.detach().reshape(-1).to(torch.float64).cpu()
        rows = self._exchange(_SUMS, flat) if self.in_decision else self._gather(flat)
        return rows.sum(dim=0).reshape(values.shape)

    @contextlib.contextmanager
    def deciding(self):
        """The policy's ``decide`` runs inside: its reductions are tagged messages."""
        token = _active.set(self)
        self.in_decision = True
        try:
            yield
        finally:
            self.in_decision = False
            _active.reset(token)

    def agree(self, decision, error: BaseException | None, history: int):
        """The decision every rank takes: the common one; ``compute`` when the ranks answered differently
        (counted in ``disagreements``); every rank raises when any rank's policy raised."""
        payload = torch.zeros(6 + history, dtype=torch.float64)
        if error is not None or decision is None:
            payload[0] = 1.0
        else:
            weights = decision.weights if decision.weights is not None and len(decision.weights) <= history else None
            payload[1] = float(decision.compute)
            payload[2], payload[3] = float(decision.signal is not None), decision.signal or 0.0
            if weights is not None:
                payload[4] = len(weights)
                payload[5:5 + len(weights)] = torch.tensor(weights, dtype=torch.float64)
            payload[-1] = -1 if decision.tokens is None else torch.as_tensor(decision.tokens).shape[-1]  # tokens chosen
        rows = self._exchange(_DECISION, payload)
        if bool(rows[:, 0].any()):
            self._raise_together(error, rows[:, 0])
        if bool((rows == rows[0]).all()):
            return decision
        self.disagreements += 1
        if self.disagreements == 1 and self.rank == 0:
            log.warning("the ranks' policies answered differently (a policy that reads its own shard's tensors "
                        "without reducing them): every rank computes where they disagree")
        return dataclasses.replace(decision, compute=True, weights=None, tokens=None, signal=float(rows[0, 3]) if rows[0, 2] else None)

    def _raise_together(self, error: BaseException | None, failed: torch.Tensor) -> None:
        messages = [None] * self.size
        torch.distributed.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}",
                                            group=self.group)
        ranks = [r for r, flag in enumerate(failed.tolist()) if flag]
        if error is not None:
            raise error
        raise RuntimeError(f"the policy failed on rank {ranks[0]} of the context-parallel group: {messages[ranks[0]]}")


def ask(policy, context, reduction: Reduction | None, history: int | None = None):
    """``policy.decide(context)``; under context parallelism, the decision all ranks agreed on (forecast weights
    of at most ``history`` kept outputs, the policy's own ``history`` by default)."""
    if reduction is None:
        return policy.decide(context)
    decision = error = None
    with reduction.deciding():
        try:
            decision = policy.decide(context)
        except RanksDiverged:
            raise
        except Exception as err:  # raised again on every rank by agree()
            error = err
    return reduction.agree(decision, error, policy.history if history is None else history)


@contextlib.contextmanager
def reducing_over(group):
    """Within: ``reduce_sums`` adds over ``group``'s ranks (nothing changes for ``None``)."""
    token = _active.set(None if group is None else Reduction(group))
    try:
        yield
    finally:
        _active.reset(token)


def reduce_sums(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks of the active context-parallel group; ``values`` itself when none is active.

    A statistic made of sums (a relative L1 = sum |x - ref| / sum |ref|, a Gram matrix, a mean as a sum and a
    count) reduced this way equals its one-process value whatever the shards are. Every rank must call it at
    the same point with a tensor of the same shape."""
    reduction = _active.get()
    return values if reduction is None else reduction.sums(values)


def reducing() -> bool:
    """Whether ``reduce_sums`` adds over ranks here."""
    return _active.get() is not None
