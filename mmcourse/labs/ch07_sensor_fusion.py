"""Fusing noisy sensors: the toy behind §7.2's "autonomous driving fuses camera, radar and lidar" (chapter 7).

Several sensors observe the same quantity (say the distance to the car ahead), each with its own noise. How should
their readings be combined?

* :func:`simulate_readings` — readings ``(N, S)`` of ``S`` sensors: the truth plus Gaussian noise of a standard
  deviation per sensor (or per sample and sensor, when the noise depends on conditions such as the light).
* :func:`inverse_variance_weights`, :func:`fuse_inverse_variance` — the classic answer: weight sensor ``s`` by
  ``1 / σ_s²`` (normalised). For independent, unbiased sensors it is the best linear unbiased estimate, and its
  noise :func:`fused_std` ``= (Σ_s σ_s⁻²)^(-1/2)`` is below every single sensor's. A plain average is *not*: it can
  be worse than the best sensor alone.
* :func:`estimate_noise_std` — the ``σ_s`` measured on calibration data (readings with known truth).
* :func:`fit_linear_fusion` — a *learned* fusion: least-squares weights (and a bias) from calibration data, with no
  noise model at all; it rediscovers inverse-variance weighting.
* :class:`GatedFusion`, :func:`build_gated_fusion`, :func:`train_gated_fusion` (on :func:`calibration_data`) — a
  learned fusion that also sees a *context* (e.g. the light level): a small MLP outputs per-sample sensor weights
  (a softmax), so it can trust the camera by day and the radar by night, which no fixed weighting can.
* :func:`rmse` — the yardstick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse._checks import check_positive, check_same_size, check_tensor
from mmcourse.train import History, fit, seeded

__all__ = [
    "simulate_readings", "day_night_std", "inverse_variance_weights", "fuse_inverse_variance", "fused_std",
    "estimate_noise_std", "LinearFusion", "fit_linear_fusion", "GatedFusion", "calibration_data",
    "build_gated_fusion", "train_gated_fusion", "rmse", "plot_fusion", "plot_gated_fusion",
]


def _as_noise_tensor(noise_std, name: str) -> torch.Tensor:
    """``noise_std`` as a float tensor ``(S,)`` or ``(N, S)`` of positive, finite numbers."""
    if isinstance(noise_std, torch.Tensor):
        std = check_tensor(noise_std, name, ndim=(1, 2), floating=True, finite=True)
    elif isinstance(noise_std, Sequence) and not isinstance(noise_std, str) and len(noise_std) > 0:
        for i, value in enumerate(noise_std):
            check_positive(value, f"{name}[{i}]")
        std = torch.tensor([float(v) for v in noise_std])
    else:
        raise TypeError(f"{name} must be a non-empty list of positive numbers or a tensor (S,) / (N, S), "
                        f"got {noise_std!r}")
    if std.numel() == 0 or std.size(-1) == 0:
        raise ValueError(f"{name} must describe at least one sensor, got shape {tuple(std.shape)}")
    if bool((std <= 0).any()):
        raise ValueError(f"{name} must be > 0 everywhere, got a minimum of {float(std.min()):.4g}")
    return std


def simulate_readings(
    truth: torch.Tensor, noise_std, *, bias: Sequence[float] | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """What ``S`` noisy sensors read when the true value is ``truth``.

    Args:
        truth: ``(N,)`` true values.
        noise_std: ``S`` standard deviations (a list or a tensor ``(S,)``), or a tensor ``(N, S)`` when the noise
            changes from sample to sample (e.g. a camera at night).
        bias: optional ``S`` constant offsets (a miscalibrated sensor); default none.
        generator: for reproducible noise.
    Returns:
        readings ``(N, S)`` = ``truth[:, None] + bias + noise_std * ε``, ``ε ~ N(0, 1)``.
    """
    check_tensor(truth, "truth", ndim=1, floating=True, finite=True)
    std = _as_noise_tensor(noise_std, "noise_std")
    if std.dim() == 2 and std.size(0) != truth.size(0):
        raise ValueError(f"noise_std of shape (N, S) must have N = len(truth) = {truth.size(0)}, "
                         f"got {tuple(std.shape)}")
    num_sensors = std.size(-1)
    offset = torch.zeros(num_sensors)
    if bias is not None:
        if isinstance(bias, str) or not isinstance(bias, Sequence) or len(bias) != num_sensors:
            raise ValueError(f"bias must hold one number per sensor ({num_sensors}), got {bias!r}")
        offset = torch.tensor([float(b) for b in bias])
    noise = torch.randn(truth.size(0), num_sensors, generator=generator) * std
    return truth[:, None] + offset + noise


def day_night_std(light: torch.Tensor, day_std: float, night_std: float) -> torch.Tensor:
    """A camera's noise level by light: ``day_std`` at ``light = 1``, ``night_std`` at ``light = 0``, linear between.

    ``light (N,)`` in ``[0, 1]`` → standard deviations ``(N,)``.
    """
    check_tensor(light, "light", ndim=1, floating=True, finite=True)
    check_positive(day_std, "day_std")
    check_positive(night_std, "night_std")
    if bool((light < 0).any() or (light > 1).any()):
        low, high = float(light.min()), float(light.max())
        raise ValueError(f"light must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    return night_std + (day_std - night_std) * light


def inverse_variance_weights(noise_std) -> torch.Tensor:
    """Weights ``w_s = σ_s⁻² / Σ_k σ_k⁻²``: ``(S,) → (S,)`` or per sample ``(N, S) → (N, S)``; rows sum to 1."""
    std = _as_noise_tensor(noise_std, "noise_std")
    precision = std.pow(-2)
    return precision / precision.sum(dim=-1, keepdim=True)


def fuse_inverse_variance(readings: torch.Tensor, noise_std) -> torch.Tensor:
    """The inverse-variance weighted mean of the sensors: ``readings (N, S)``, ``noise_std (S,) or (N, S) → (N,)``."""
    check_tensor(readings, "readings", ndim=2, floating=True)
    weights = inverse_variance_weights(noise_std)
    if weights.size(-1) != readings.size(1):
        raise ValueError(f"noise_std must give one value per sensor ({readings.size(1)}), got shape "
                         f"{tuple(weights.shape)}")
    if weights.dim() == 2:
        check_same_size(readings, weights, "readings", "noise_std")
    return (readings * weights).sum(dim=1)


def fused_std(noise_std) -> torch.Tensor:
    """The noise of the inverse-variance fused estimate, ``(Σ_s σ_s⁻²)^(-1/2)``: ``(S,) → ()`` or ``(N, S) → (N,)``.

    Always below the smallest ``σ_s``: each extra independent sensor helps, however noisy.
    """
    return _as_noise_tensor(noise_std, "noise_std").pow(-2).sum(dim=-1).rsqrt()


def estimate_noise_std(readings: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Each sensor's noise measured on calibration data: the standard deviation of ``reading − truth``.

    ``readings (N, S)``, ``truth (N,)`` with ``N >= 2`` → ``(S,)``.
    """
    check_tensor(readings, "readings", ndim=2, floating=True)
    check_tensor(truth, "truth", ndim=1, floating=True)
    check_same_size(readings, truth, "readings", "truth")
    if readings.size(0) < 2:
        raise ValueError(f"estimate_noise_std needs at least 2 calibration samples, got {readings.size(0)}")
    return (readings - truth[:, None]).std(dim=0).clamp_min(torch.finfo(readings.dtype).tiny)


class LinearFusion(nn.Module):
    """A fixed linear fusion ``estimate = readings @ weights + bias``: ``(N, S) → (N,)``."""

    def __init__(self, weights: torch.Tensor, bias: float | torch.Tensor = 0.0):
        super().__init__()
        check_tensor(weights, "weights", ndim=1, floating=True, finite=True)
        self.register_buffer("weights", weights.detach().clone())
        self.register_buffer("bias", torch.as_tensor(bias, dtype=weights.dtype).detach().clone().reshape(()))

    def forward(self, readings: torch.Tensor) -> torch.Tensor:
        check_tensor(readings, "readings", ndim=2, floating=True)
        if readings.size(1) != self.weights.size(0):
            raise ValueError(f"readings must have shape (N, {self.weights.size(0)}), got {tuple(readings.shape)}")
        return readings @ self.weights + self.bias

    def extra_repr(self) -> str:
        weights = ", ".join(f"{float(w):.3f}" for w in self.weights)
        return f"weights=[{weights}], bias={float(self.bias):.3f}"


def fit_linear_fusion(readings: torch.Tensor, truth: torch.Tensor, *, fit_bias: bool = True,
                      ridge: float = 1e-6) -> LinearFusion:
    """Learn fusion weights from calibration data by least squares (no noise model needed).

    Minimises ``Σ_n (readings[n] @ w + b − truth[n])² + ridge·‖w‖²`` in closed form.

    Args:
        readings: ``(N, S)`` calibration readings; truth: ``(N,)`` the values they measured.
        fit_bias: also learn an offset ``b`` (absorbs a constant sensor bias); otherwise ``b = 0``.
        ridge: a small ridge term for numerical stability (≥ 0).
    Returns:
        a :class:`LinearFusion`.
    """
    check_tensor(readings, "readings", ndim=2, floating=True, finite=True)
    check_tensor(truth, "truth", ndim=1, floating=True, finite=True)
    check_same_size(readings, truth, "readings", "truth")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or ridge < 0:
        raise ValueError(f"ridge must be a number >= 0, got {ridge!r}")
    needed = readings.size(1) + int(fit_bias)
    if readings.size(0) < needed:
        raise ValueError(f"fit_linear_fusion needs at least {needed} calibration samples, got {readings.size(0)}")
    x = readings.double()
    if fit_bias:
        x = torch.cat([x, torch.ones(x.size(0), 1, dtype=x.dtype)], dim=1)
    penalty = ridge * torch.eye(x.size(1), dtype=x.dtype)
    if fit_bias:
        penalty[-1, -1] = 0.0  # the offset is not shrunk
    solution = torch.linalg.solve(x.t() @ x + penalty, x.t() @ truth.double())
    weights = solution[: readings.size(1)].to(readings.dtype)
    bias = solution[-1].to(readings.dtype) if fit_bias else 0.0
    return LinearFusion(weights, bias)


class GatedFusion(nn.Module):
    """A learned, context-aware fusion: a small MLP turns the context into per-sample sensor weights.

    ``weights = softmax(MLP(context))`` ``(N, S)``, ``estimate = Σ_s weights[:, s] · readings[:, s]`` ``(N,)``.
    The weights are convex (positive, summing to 1), so the estimate stays between the sensors' readings.

    Args:
        num_sensors: ``S``; context_dim: width ``C`` of the context (e.g. 1 for a light level); hidden_dim: MLP width.

    ``forward(readings (N, S), context (N, C)) → (N,)``; :meth:`weights` gives the ``(N, S)`` weights.
    """

    def __init__(self, num_sensors: int, context_dim: int = 1, hidden_dim: int = 16):
        super().__init__()
        check_positive(num_sensors, "num_sensors", integer=True)
        check_positive(context_dim, "context_dim", integer=True)
        check_positive(hidden_dim, "hidden_dim", integer=True)
        self.num_sensors, self.context_dim = num_sensors, context_dim
        self.gate = nn.Sequential(nn.Linear(context_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, num_sensors))

    def weights(self, context: torch.Tensor) -> torch.Tensor:
        check_tensor(context, "context", ndim=2, floating=True)
        if context.size(1) != self.context_dim:
            raise ValueError(f"context must have shape (N, {self.context_dim}), got {tuple(context.shape)}")
        return F.softmax(self.gate(context), dim=-1)

    def forward(self, readings: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        check_tensor(readings, "readings", ndim=2, floating=True)
        if readings.size(1) != self.num_sensors:
            raise ValueError(f"readings must have shape (N, {self.num_sensors}), got {tuple(readings.shape)}")
        check_same_size(readings, context, "readings", "context")
        return (self.weights(context) * readings).sum(dim=1)


def calibration_data(readings: torch.Tensor, context: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Calibration samples (readings with known truth) as the tensors :func:`train_gated_fusion` trains on.

    Args:
        readings: ``(N, S)`` sensor readings; context: ``(N, C)`` what the gate sees (e.g. the light level);
        truth: ``(N,)`` the true values.
    Returns:
        ``{"readings": (N, S), "context": (N, C), "truth": (N,)}`` (checked: finite floats, one row per sample).
    """
    check_tensor(readings, "readings", ndim=2, floating=True, finite=True)
    check_tensor(context, "context", ndim=2, floating=True, finite=True)
    check_tensor(truth, "truth", ndim=1, floating=True, finite=True)
    check_same_size(readings, context, "readings", "context")
    check_same_size(readings, truth, "readings", "truth")
    return {"readings": readings, "context": context, "truth": truth}


def build_gated_fusion(num_sensors: int, context_dim: int = 1, hidden_dim: int = 16, *, seed: int = 0) -> GatedFusion:
    """A fresh :class:`GatedFusion`, its initial weights drawn under ``seeded(seed)``."""
    with seeded(seed):
        return GatedFusion(num_sensors, context_dim, hidden_dim)


def train_gated_fusion(
    model: GatedFusion,
    data: dict[str, torch.Tensor],
    *,
    steps: int = 150,
    batch_size: int = 256,
    lr: float = 2e-2,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> History:
    """Train a :class:`GatedFusion` (in place, e.g. from :func:`build_gated_fusion`) on calibration data by mean
    squared error, for a fixed number of steps.

    Args:
        data: :func:`calibration_data` output: ``readings (N, S)``, ``context (N, C)``, ``truth (N,)``.
        steps, batch_size, lr: optimisation (AdamW, cosine schedule; the batch is ``min(batch_size, N)``).
        seed: seeds the minibatches.
        device: where to train (default: where the model is). A gate of a few hundred weights trains faster on
            the CPU than on a GPU, where each step would be a handful of tiny kernel launches.
    Returns:
        the :class:`~mmcourse.train.History`; the model is left in ``eval()`` mode.
    """
    if not isinstance(model, GatedFusion):
        raise TypeError(f"model must be a GatedFusion, got {type(model).__name__}")
    if not isinstance(data, dict) or not {"readings", "context", "truth"} <= set(data):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"data must be the dict of calibration_data(...), got {got}")
    readings, context, truth = data["readings"], data["context"], data["truth"]
    if readings.size(1) != model.num_sensors or context.size(1) != model.context_dim:
        raise ValueError(f"data must hold readings (N, {model.num_sensors}) and context (N, {model.context_dim}), "
                         f"got {tuple(readings.shape)} and {tuple(context.shape)}")
    check_positive(steps, "steps", integer=True)

    def step(module: GatedFusion, batch):
        return F.mse_loss(module(batch["readings"], batch["context"]), batch["truth"])

    history = fit(model, step, {"readings": readings, "context": context, "truth": truth}, steps=steps,
                  batch_size=min(batch_size, len(truth)), lr=lr, lr_schedule="cosine", seed=seed, device=device)
    model.eval()
    return history


def rmse(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """Root mean squared error between ``estimate (N,)`` and ``truth (N,)``, as a Python float."""
    check_tensor(estimate, "estimate", ndim=1, floating=True)
    check_tensor(truth, "truth", ndim=1, floating=True)
    check_same_size(estimate, truth, "estimate", "truth")
    if estimate.numel() == 0:
        raise ValueError("rmse needs at least one sample, got empty tensors")
    return math.sqrt(float((estimate - truth).pow(2).mean()))


def plot_fusion(truth: torch.Tensor, camera_noise: float = 1.0, radar_noise: float = 2.0, seed: int = 1):
    """Simulate a camera and a radar measuring ``truth (N,)`` with the given noise (seeded) and draw the RMSE of
    each sensor, their average and their inverse-variance fusion (with the theory line), and the error histograms.
    Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    noise = [camera_noise, radar_noise]
    sample = simulate_readings(truth, noise, generator=torch.Generator().manual_seed(seed))
    fused = {"camera": sample[:, 0], "radar": sample[:, 1], "average": sample.mean(dim=1),
             "inverse-variance": fuse_inverse_variance(sample, noise)}
    errors = {name: rmse(estimate, truth) for name, estimate in fused.items()}
    fig, (ax_bar, ax_hist) = plt.subplots(1, 2, figsize=(10, 3.4))
    colors = ["#60a5fa", "#f59e0b", "#a3a3a3", "#16a34a"]
    ax_bar.bar(list(errors), list(errors.values()), color=colors)
    ax_bar.axhline(float(fused_std(noise)), color="black", ls="--", lw=1, label="theory (inverse-variance)")
    ax_bar.set_ylabel("RMSE (m)")
    ax_bar.set_ylim(0, 4.2)
    ax_bar.legend(fontsize=8)
    ax_bar.set_title(f"camera noise {camera_noise:.1f} m, radar noise {radar_noise:.1f} m", fontsize=10)
    for name, color in zip(["camera", "radar", "inverse-variance"], [colors[0], colors[1], colors[3]]):
        ax_hist.hist((fused[name] - truth).cpu().numpy(), bins=60, range=(-8, 8), histtype="step", lw=1.5,
                     color=color, label=name)
    ax_hist.set_xlabel("error (m)")
    ax_hist.set_ylabel("test readings")
    ax_hist.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_gated_fusion(gated: GatedFusion, estimates: dict, truth: torch.Tensor, light: torch.Tensor,
                      fixed_camera_weight: float, day_std: float = 0.5, night_std: float = 4.0,
                      radar_std: float = 1.5):
    """Left: the weight a gated fusion gives the camera against the light level, next to the oracle's
    ``σ_r² / (σ_r² + σ_c²)`` and a fixed weighting; right: each estimate's RMSE in five bins of light level.

    Args:
        estimates: ``{name: (N,) estimate}`` of ``truth (N,)`` at light levels ``light (N,)`` in [0, 1].
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    levels = torch.linspace(0, 1, 51)
    with torch.no_grad():
        gated_weight = gated.weights(levels[:, None])[:, 0]
    oracle_weight = radar_std**2 / (radar_std**2 + day_night_std(levels, day_std, night_std) ** 2)
    bins = torch.bucketize(light, torch.linspace(0, 1, 6)[1:-1])
    fig, (ax_w, ax_e) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax_w.plot(levels.cpu().numpy(), oracle_weight.cpu().numpy(), "k--", label="oracle (1/sigma^2)")
    ax_w.plot(levels.cpu().numpy(), gated_weight.cpu().numpy(), label="gated, learned")
    ax_w.axhline(fixed_camera_weight, color="tab:green", label="fixed inverse-variance")
    ax_w.set_xlabel("light level (0 = night)")
    ax_w.set_ylabel("weight given to the camera")
    ax_w.legend(fontsize=8)
    ax_w.set_title("How much to trust the camera")
    centres = (torch.arange(5) + 0.5) / 5
    for name, estimate in estimates.items():
        errors = (estimate - truth) ** 2
        ax_e.plot(centres.cpu().numpy(), [float(errors[bins == b].mean().sqrt()) for b in range(5)], "o-", label=name)
    ax_e.set_xlabel("light level (bins of 0.2)")
    ax_e.set_ylabel("RMSE (m)")
    ax_e.legend(fontsize=8)
    ax_e.set_title("Error by light level")
    fig.tight_layout()
    return fig
