"""One small training loop for every chapter: :func:`fit` and the :class:`History` it returns.

The loop is deliberately plain::

    for step in range(steps):
        batch = next(batches)                      # tensors moved to the device
        loss = step_fn(model, batch)               # you say what a step computes
        loss.backward(); clip; optimizer.step()    # (with AMP on CUDA when asked)
        every eval_every steps: history.eval_metrics += eval_fn(model)

Train for a fixed number of ``steps``, never for a time budget: the same arguments give the same model, which is
what stored notebook outputs need (on a shared machine a time budget gives a different model every run). A run
draws its randomness under :func:`seeded`, so it neither depends on nor disturbs the caller's random stream.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from mmcourse._checks import check_positive

__all__ = [
    "History", "fit", "seeded", "fused_adamw", "move_to_device", "iterate_minibatches", "module_device", "evaluating",
]


@dataclass
class History:
    """What :func:`fit` recorded.

    Attributes:
        steps: optimizer step numbers (1-based) at which ``losses`` were recorded.
        losses: training loss per step.
        metrics: extra per-step training values returned by the step function, plus ``"lr"``.
        eval_steps: steps at which ``eval_fn`` ran.
        eval_metrics: ``name → values`` returned by ``eval_fn`` (a plain float is stored as ``"eval"``).
        seconds: wall-clock training time.
    """

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    eval_steps: list[int] = field(default_factory=list)
    eval_metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def last(self, name: str = "loss") -> float:
        """The latest value of ``"loss"``, a training metric or an eval metric."""
        if name == "loss":
            series = self.losses
        else:
            series = self.eval_metrics.get(name, self.metrics.get(name))
        if not series:
            known = ["loss", *self.metrics, *self.eval_metrics]
            raise KeyError(f"no recorded values for {name!r}; recorded: {known}")
        return series[-1]

    def smoothed_losses(self, window: int = 20) -> list[float]:
        """Running mean of the loss over the last ``window`` steps (for plots)."""
        check_positive(window, "window", integer=True)
        out, total = [], 0.0
        for i, value in enumerate(self.losses):
            total += value
            if i >= window:
                total -= self.losses[i - window]
            out.append(total / min(i + 1, window))
        return out

    def __repr__(self) -> str:
        last = f", last loss {self.losses[-1]:.4f}" if self.losses else ""
        evals = ", ".join(f"{k}={v[-1]:.4f}" for k, v in self.eval_metrics.items() if v)
        return f"History({self.num_steps} steps{last}{', ' + evals if evals else ''})"


def move_to_device(batch, device: torch.device):
    """Move every tensor in a (nested) tuple / list / dict to ``device``; other values stay as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _tensor_collection_size(data) -> int | None:
    """N if ``data`` is a tensor, a tuple/list of tensors or a dict of tensors sharing dim 0, else None."""
    if isinstance(data, torch.Tensor):
        return data.size(0)
    if isinstance(data, Mapping):
        values = list(data.values())
    elif isinstance(data, (list, tuple)):
        values = list(data)
    else:
        return None
    if not values or not all(isinstance(v, torch.Tensor) for v in values):
        return None
    sizes = {v.size(0) for v in values}
    if len(sizes) != 1:
        raise ValueError(f"data tensors must share their first dim, got sizes {sorted(sizes)}")
    return sizes.pop()


def _take(data, index: torch.Tensor):
    """The rows ``index`` of every tensor (``index_select``: the same rows as ``t[index]``, without the slow
    deterministic-mode path advanced indexing takes on multi-threaded CPUs)."""
    if isinstance(data, torch.Tensor):
        return data.index_select(0, index.to(data.device))
    if isinstance(data, Mapping):
        return {k: _take(v, index) for k, v in data.items()}
    return type(data)(_take(v, index) for v in data)


def iterate_minibatches(data, batch_size: int, generator: torch.Generator, drop_last: bool = True) -> Iterator:
    """One shuffled pass over in-memory tensors (a tensor, a tuple/list or a dict of tensors).

    ``drop_last`` drops an incomplete last batch unless it is the only one.
    """
    n = _tensor_collection_size(data)
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield _take(data, order[start : start + batch_size])


def _endless(data, batch_size: int, generator: torch.Generator) -> Iterator:
    in_memory = _tensor_collection_size(data) is not None
    while True:
        produced = False
        source = iterate_minibatches(data, batch_size, generator) if in_memory else iter(data)
        for batch in source:
            produced = True
            yield batch
        if not produced:
            raise ValueError("data produced no batches")


def module_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on: that of its first parameter (or buffer); the CPU for an empty module."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``with evaluating(model): ...`` runs the block in ``eval()`` mode without gradients, then puts ``module`` back
    in the mode it was in — also when the block raises."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def _cosine_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _split_step_output(output) -> tuple[torch.Tensor, Mapping]:
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], Mapping):
        loss, extras = output
    else:
        loss, extras = output, {}
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise TypeError(f"step_fn must return a scalar loss tensor or (loss, dict of numbers), got {got}")
    return loss, extras


def _as_floats(values: list) -> list[float]:
    """Floats from Python numbers or 0-d tensors, reading tensors back in one go (one host sync, not one each)."""
    if values and all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack([v.detach().double().reshape(()) for v in values]).tolist()  # exactly float(v) each
    return [float(v) for v in values]


class _StepLog:
    """The per-step loss and training metrics, kept as tensors and written into the :class:`History` every
    ``every`` steps: on a GPU each read of a value waits for the GPU, so ``fit`` reads them in batches (on the CPU,
    where a read costs nothing, every step). A non-finite loss raises, naming its step."""

    def __init__(self, history: History, every: int):
        self.history, self.every = history, every
        self.steps: list[int] = []
        self.losses: list[torch.Tensor] = []
        self.extras: dict[str, list] = {}

    def add(self, step: int, loss: torch.Tensor, extras: Mapping) -> None:
        self.steps.append(step)
        self.losses.append(loss.detach())
        for name, value in extras.items():
            self.extras.setdefault(name, []).append(value.detach() if isinstance(value, torch.Tensor) else value)
        if len(self.steps) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.steps:
            return
        losses = _as_floats(self.losses)
        self.history.steps.extend(self.steps)
        self.history.losses.extend(losses)
        for name, values in self.extras.items():
            self.history.metrics.setdefault(name, []).extend(_as_floats(values))
        bad = next(((step, v) for step, v in zip(self.steps, losses) if not math.isfinite(v)), None)
        self.steps, self.losses, self.extras = [], [], {}
        if bad is not None:
            raise RuntimeError(f"loss is {bad[1]} at step {bad[0]}: lower lr or check the inputs")


def _run_eval(model: nn.Module, eval_fn: Callable, history: History, step: int) -> None:
    with evaluating(model):
        result = eval_fn(model)
    if result is None:
        return
    if not isinstance(result, Mapping):
        result = {"eval": result}
    history.eval_steps.append(step)
    for name, value in result.items():
        history.eval_metrics.setdefault(name, []).append(float(value))


def fused_adamw(params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW that updates all parameters in one fused kernel where this torch has one for their device (CPU from
    torch 2.4, CUDA), the usual AdamW elsewhere. Same update rule; the fused kernel rounds differently in the last
    bits. It is :func:`fit`'s default for two reasons: it is faster (one kernel instead of a dozen per parameter
    list; measured in benchmarks/README.md), and on the CPU it gives the same bits on every x86-64 processor with
    AVX2 or newer, while the unfused AdamW takes its square root from a math library that picks its code by
    processor model, so two CPUs drift apart in the last bit from the first step."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # no fused kernel for these parameters' device or dtype in this torch
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """``with seeded(seed): ...`` runs the block with torch's random number generators seeded to ``seed`` (the CPU
    one and the current CUDA device's), then puts back the state they had before: same seed, same draws inside the
    block, and the caller's random stream goes on as if the block had not run. ``None`` leaves the RNG alone.
    Only :func:`mmcourse.setup` seeds the global RNG for good."""
    if seed is None:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _check_fit_arguments(model, step_fn, steps, batch_size, lr_schedule, eval_every, grad_clip) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable(model, batch), got {type(step_fn).__name__}")
    check_positive(steps, "steps", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    if lr_schedule not in (None, "cosine"):
        raise ValueError(f"lr_schedule must be None or 'cosine', got {lr_schedule!r}")
    if eval_every is not None:
        check_positive(eval_every, "eval_every", integer=True)
    if grad_clip is not None:
        check_positive(grad_clip, "grad_clip")


def _default_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    check_positive(lr, "lr")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad")
    return fused_adamw(params, lr=lr, weight_decay=weight_decay)


def fit(
    model: nn.Module,
    step_fn: Callable,
    data: Iterable | torch.Tensor | tuple | dict,
    *,
    steps: int,
    batch_size: int = 64,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    lr_schedule: str | None = None,
    warmup_steps: int = 0,
    grad_clip: float | None = None,
    device: torch.device | str | None = None,
    amp: bool = False,
    eval_fn: Callable[[nn.Module], Mapping[str, float] | float | None] | None = None,
    eval_every: int | None = None,
    progress: bool = False,
    seed: int | None = 0,
) -> History:
    """Train ``model`` for ``steps`` optimizer steps and return a :class:`History`.

    Args:
        model: any ``nn.Module``; moved to ``device`` (default: where its parameters already are) and put in
            ``train()`` mode.
        step_fn: ``step_fn(model, batch) → loss`` or ``→ (loss, {"name": float})``: the forward pass and loss of
            one step. ``batch`` is what ``data`` yields, with its tensors on the device.
        data: in-memory tensors — a tensor, a tuple/list or a dict of tensors sharing dim 0, moved to the device
            once and shuffled into minibatches of ``batch_size`` (seeded) — or any iterable of batches such as a
            ``DataLoader`` (re-iterated as often as needed).
        steps: how long to train, in optimizer steps.
        optimizer: an optimizer over the model's parameters; default :func:`fused_adamw` ``(lr, weight_decay)``
            over all parameters that require grad.
        lr_schedule: ``None`` (constant) or ``"cosine"`` (linear warm-up for ``warmup_steps``, cosine to 0).
        grad_clip: clip the global gradient norm to this value.
        amp: mixed precision on CUDA (bfloat16 where supported, else float16 with a grad scaler); ignored on CPU.
        eval_fn: ``eval_fn(model) → {"name": value}`` (or a float), run under ``no_grad`` in ``eval()`` mode every
            ``eval_every`` steps and after the last step.
        progress: show a ``tqdm.auto`` progress bar.
        seed: training runs under :func:`seeded` ``(seed)`` (dropout and anything drawn inside the steps) and the
            minibatch order comes from its own generator seeded with it: same seed, same model; the caller's
            random stream is left as it was. ``None`` draws from the global RNG instead.
    Returns:
        the :class:`History` of losses and metrics.
    """
    _check_fit_arguments(model, step_fn, steps, batch_size, lr_schedule, eval_every, grad_clip)
    device = torch.device(device) if device is not None else module_device(model)
    model.to(device)
    if _tensor_collection_size(data) is not None:
        data = move_to_device(data, device)  # in-memory data crosses to the device once, not once per batch
    model.train()
    optimizer = optimizer if optimizer is not None else _default_optimizer(model, lr, weight_decay)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    use_amp = amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    from tqdm.auto import tqdm

    history = History()
    log = _StepLog(history, every=1 if device.type == "cpu" else 50)
    bar = tqdm(total=steps, desc=getattr(step_fn, "__name__", "train"), disable=not progress, leave=False)
    start = time.perf_counter()
    with seeded(seed):
        generator = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(2**62, ())))
        batches = _endless(data, batch_size, generator)
        try:
            for step in range(steps):
                if lr_schedule == "cosine":
                    factor = _cosine_factor(step, steps, warmup_steps)
                    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                        group["lr"] = base * factor
                batch = move_to_device(next(batches), device)
                with torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext():
                    loss, extras = _split_step_output(step_fn(model, batch))
                history.metrics.setdefault("lr", []).append(optimizer.param_groups[0]["lr"])
                log.add(step + 1, loss, extras)  # raises on a non-finite loss (on the CPU: before this update)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
                bar.update(1)
                if progress and (step % 10 == 0 or step + 1 == steps):
                    log.flush()
                    bar.set_postfix(loss=f"{history.losses[-1]:.4f}")
                if eval_fn is not None and eval_every is not None and (step + 1) % eval_every == 0:
                    _run_eval(model, eval_fn, history, step + 1)
            log.flush()
        finally:
            bar.close()
        history.seconds = time.perf_counter() - start
        if eval_fn is not None and (not history.eval_steps or history.eval_steps[-1] != history.steps[-1]):
            _run_eval(model, eval_fn, history, history.steps[-1])
    return history
