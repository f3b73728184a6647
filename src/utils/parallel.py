"""Training in several processes under `torchrun` (DistributedDataParallel); plain otherwise.

A process started by torchrun finds RANK, WORLD_SIZE and LOCAL_RANK in its environment; without
them it is the only process and every helper here is a no-op. Every rank draws the same shuffled
global batch and takes a contiguous share of it, so a run with N processes sees the batches a
1-process run with the same `--train_batch_size` and seed sees. Only rank 0 writes files.
"""
import contextlib
import os

import torch
import torch.distributed as dist


def world_size():
    return int(os.environ.get("WORLD_SIZE", 1))


def rank():
    return int(os.environ.get("RANK", 0))


def local_rank():
    """The GPU of this process on its node (torchrun starts one process per GPU)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main():
    """Rank 0: the one process that writes logs, checkpoints and json."""
    return rank() == 0


def distributed():
    return world_size() > 1


@contextlib.contextmanager
def process_group(device):
    """Joins torchrun's process group (gloo on CPU, nccl on CUDA) while the block runs."""
    if not distributed() or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        # nccl collectives run on the current device, which must be this process's own GPU
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
        # leave together: a rank that tears gloo down while its peer still has work in flight
        # with it can abort its peer at exit (seen once in CI as SIGABRT after a finished run);
        # skipped on an error, where the peer may never arrive
        dist.barrier()
    finally:
        dist.destroy_process_group()


def wrap(model, device):
    """The model in DistributedDataParallel when there are several processes, else None."""
    if not distributed():
        return None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def share(index):
    """(this rank's rows of the global batch `index`, the weight of its mean loss).

    DDP averages gradients over ranks; weighting rank r's mean loss by n_r * N / n makes that
    average the mean over the global batch's n examples even when the ranks' shares differ (a
    short last batch). A rank left without rows (n < N) reruns one row with weight 0, because
    every rank has to take part in each gradient all-reduce.
    """
    n = world_size()
    if n == 1:
        return index, 1.0
    part = index.tensor_split(n)[rank()]
    if len(part) == 0:
        return index[:1], 0.0
    return part, len(part) * n / len(index)


def all_sum(tensor):
    """The sum of `tensor` over ranks (a new tensor), or `tensor` itself in one process."""
    if not distributed():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def average_grads(params):
    """Averages the gradients of `params` over the ranks in place (for parameters outside the
    DDP-wrapped model); a no-op in one process."""
    if not distributed():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def all_gather(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank; [obj] in one process."""
    if not distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out

