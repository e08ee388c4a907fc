"""What wraps a built model for the hardware it trains on, so model code stays single-device:
compiled layers, and data parallelism over several processes.

Compilation (`train.compile`): `torch.compile` traces a Transformer layer's forward pass into a
graph once (TorchDynamo), and TorchInductor generates kernels that fuse the elementwise work
between the matrix products (bias + GELU, LayerNorm, residual adds) and their backward passes, so
each activation is read and written once instead of once per operation. The products themselves
still go to the BLAS (cuBLAS on a GPU).

Each `nn.Block` is compiled, not the whole model: every family (GPT, Llama, BERT, ELECTRA's two
encoders, a fine-tuning head on any of them) and every objective then runs compiled, whatever it
calls; the layers share one compiled graph (same code, parameters passed in), so a 12-layer model
compiles one layer's worth. Embeddings, heads and losses stay eager. The first step pays for the
compilation (tens of seconds on a laptop CPU); every later step runs the compiled graph.

    auto: compile on CUDA, where fusing saves most (memory-bound kernels, kernel launches);
          stay eager on the CPU, where the products take ~80% of a step and the gain is lost in noise
    true / false: always / never

Only training steps run compiled (`CompiledLayers.active`); evaluation and generation see the plain
model, so they never wait for a compile of another shape. The state dict is untouched.

Data parallelism (`torchrun --nproc_per_node N -m lmforge train ...`): PyTorch's own stack, nothing
home-made. torchrun starts N processes and tells each its rank (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR); `start_world` joins them into one process group (gloo on the CPU, NCCL on CUDA). Every
process holds the model; one optimiser step takes N x grad_accum micro-batches, the same ones, in the
same order, that a single process with grad_accum x N takes, and process r computes micro-batches
r, r + N, ... of them:

    ddp (default): DistributedDataParallel averages the gradients over the processes during the
                   backward pass (bucketed all-reduce), so every process takes the same step
    fsdp:          FSDP2 (`fully_shard`, one call per Transformer block, then the model): each process
                   keeps 1/N of every parameter, gradient and optimiser moment, and gathers a block's
                   weights just before it runs

Since sum over N processes of (their loss / grad_accum) / N is the single process's mean over its
N x grad_accum micro-batches, the steps are the same as one process's (tests/test_distributed.py checks
it to 1e-5). Evaluation runs on every process on the same batches; only process 0 writes the run
directory, logs and shows progress.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lmforge.config import auto_or_bool
from lmforge.nn import Block


def should_compile(setting: str | bool, device: torch.device) -> bool:
    """`train.compile` (auto, or a yes/no: True, "false", "on", ...) on this device."""
    setting = auto_or_bool(setting, "train.compile")
    return device.type == "cuda" if setting == "auto" else setting


class CompiledLayers:
    """Every Transformer layer of `model` with a compiled forward, switched on inside `active()`.

    `torch.compile` compiles at the first call, so a failure (no C++ compiler for the CPU backend,
    an operation the compiler does not cover) shows in the first training step; the trainer then
    goes on without it (Trainer._accumulate)."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, Block)]
        self.forwards = [torch.compile(layer.forward) for layer in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def on(self) -> None:
        for layer, forward in zip(self.layers, self.forwards):
            layer.forward = forward  # an instance attribute in front of Block.forward

    def off(self) -> None:
        for layer in self.layers:
            layer.__dict__.pop("forward", None)  # back to the class's own forward

    @contextlib.contextmanager
    def active(self):
        self.on()
        try:
            yield
        finally:
            self.off()


class CheckpointedLayers:
    """Activation checkpointing (`train.activation_checkpointing`), per Transformer layer: inside
    `active()` a layer keeps only its input from the forward pass and runs its forward again during
    the backward pass to get what the gradients need. Activation memory drops from every layer's
    intermediates to one layer's (plus each layer's input) for about a third more compute; the
    gradients are the same (tests/test_distributed.py). Around whatever forward the layer has then
    (a compiled one too), and with DDP or FSDP2 alike."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, Block)]

    @contextlib.contextmanager
    def active(self):
        from torch.utils.checkpoint import checkpoint

        saved = [layer.__dict__.get("forward") for layer in self.layers]
        for layer in self.layers:
            inner = layer.forward

            def forward(*args, inner=inner, **kwargs):
                return checkpoint(inner, *args, use_reentrant=False, **kwargs)

            layer.forward = forward
        try:
            yield
        finally:
            for layer, forward in zip(self.layers, saved):
                if forward is None:
                    layer.__dict__.pop("forward", None)
                else:
                    layer.forward = forward


TIMEOUT_MINUTES = 10  # a collective that waits longer than this (a rank died or hangs) fails the job


@dataclass(frozen=True)
class World:
    """This process's place among torchrun's processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (one process too: FSDP2 on one GPU is its own measurement)

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The world torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK in the environment), or one process."""
    env = os.environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return World()
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])), True)


def start_world(device: torch.device) -> World:
    """Join torchrun's process group for `device` (gloo on the CPU, NCCL on CUDA, each process on
    its own GPU: cuda:LOCAL_RANK); a process not started by torchrun joins nothing."""
    w = world()
    if w.launched and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(w.local_rank)
        # on CUDA, NCCL for the tensors on the GPUs and gloo for the few on the CPU (a loss to log)
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=TIMEOUT_MINUTES))
    return w


@contextlib.contextmanager
def world_session():
    """Around a command: the process group torchrun's processes joined is left cleanly at its end."""
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def device_for(device: torch.device, w: World) -> torch.device:
    """Each process's own GPU (cuda:LOCAL_RANK) when the run trains on CUDA under torchrun."""
    if w.launched and device.type == "cuda" and device.index is None:
        return torch.device("cuda", w.local_rank)
    return device


@contextlib.contextmanager
def main_first():
    """Each machine's first process (LOCAL_RANK 0) runs the block first (preparing data, training a
    tokenizer: what writes the machine's cache); the others wait for it and then run it, finding its
    files ready."""
    w = world()
    if w.size == 1 or not dist.is_initialized():
        yield
        return
    if w.local_rank != 0:
        dist.barrier()
    yield
    if w.local_rank == 0:
        dist.barrier()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_over_world(value: float) -> float:
    """The mean of `value` over the processes (a loss each computed on its own micro-batches)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def from_main(*values: float) -> list[float]:
    """Process 0's `values` on every process: decisions made from a clock (the time limit, the
    schedule's end), so that all processes stop at the same step."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(t, 0)
    return t.tolist()


class Replicated(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel whose attributes fall through to the model, so a task's loss reads
    model.config or model.lm_head through it as through the model itself.

    static_graph: DDP learns from the first step which parameters get no gradient (a pretrained
    head a fine-tune does not use) and all-reduces the others; a parameter used outside forward (a
    loss that applies the output head itself) counts as used."""

    def __init__(self, module: nn.Module):
        super().__init__(module, static_graph=True)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def shard(model: nn.Module, device: torch.device) -> None:
    """FSDP2, in place: each Transformer block its own unit (its weights gathered from the processes
    just before it runs and freed after), then the rest of the model (embeddings, final norm, heads)
    as the root unit. The model keeps its class, attributes and methods."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in [m for m in model.modules() if isinstance(m, Block)]:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def is_sharded(model: nn.Module) -> bool:
    return hasattr(model, "set_requires_gradient_sync")  # FSDP2's FSDPModule


def gradient_sync(stepped: nn.Module, on: bool):
    """Around one micro-batch's backward: with `on` False its gradients are only added up locally, not
    yet averaged over the processes (DDP's no_sync, FSDP2's set_requires_gradient_sync)."""
    if isinstance(stepped, Replicated):
        return contextlib.nullcontext() if on else stepped.no_sync()
    if is_sharded(stepped):
        stepped.set_requires_gradient_sync(on)
    return contextlib.nullcontext()


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> float:
    """Scale the gradients g by min(1, max_norm / (||g||_2 + 1e-6)) and return ||g||_2 (not finite:
    nothing is scaled, the caller stops). The squares are summed in float64, so the norm does not
    depend on how the gradients are split among processes: FSDP2's shards give the single process's
    value to the last bit of float32, where float32 sums in another order would differ in the last
    bit, and Adam turns such a bit, in a gradient that is pure rounding noise (the key bias, which
    softmax ignores), into a difference of a whole step."""
    if not params:
        return 0.0
    squares = torch.zeros((), dtype=torch.float64, device=params[0].grad.device)
    sharded = False
    for p in params:
        g = p.grad
        if hasattr(g, "to_local"):
            g, sharded = g.to_local(), True
        squares += torch.linalg.vector_norm(g, dtype=torch.float64).square()
    if sharded:
        dist.all_reduce(squares)
    norm = float(squares.sqrt())
    if math.isfinite(norm):
        scale = float(torch.tensor(min(1.0, max_norm / (norm + 1e-6)), dtype=torch.float32))
        for p in params if scale < 1.0 else ():
            p.grad.mul_(scale)
    return norm


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def _names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The optimiser's parameters by name, in its order (the order a single-process state numbers them)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]


def gathered_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(weights, optimiser state) of a sharded model, whole, on CPU, on process 0 (every process
    must call it; the others receive empty ones): the optimiser state in the single-process layout
    (parameters numbered in the optimiser's order), so that any number of processes can resume from it.
    Before the first step the optimiser has no state to gather (asking PyTorch for it would create
    one by stepping with zero gradients, and count that step)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    weights = get_model_state_dict(model, options=_options())
    if not optimizer.state:
        return weights, optimizer.state_dict()
    named = get_optimizer_state_dict(model, optimizer, options=_options())
    if not named:  # with cpu_offload, process 0 alone receives the whole state
        return weights, named
    number = {name: i for i, name in enumerate(_names(model, optimizer))}
    groups = [{**g, "params": [number[n] for n in g["params"]]} for g in named["param_groups"]]
    return weights, {"state": {number[n]: s for n, s in named["state"].items()}, "param_groups": groups}


def load_sharded_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """A single-process optimiser state (gathered_state's layout, or an ordinary run's) into the
    optimiser of a sharded model: each process keeps its own shard of it."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    if not state["state"]:  # saved before the first step: nothing to load
        return
    names = _names(model, optimizer)
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    named = {"state": {names[i]: s for i, s in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, named, options=_options())
