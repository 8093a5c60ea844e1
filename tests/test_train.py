"""The shared training loop: it learns, is deterministic, records history, evaluates, validates."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mmcourse.train import History, fit, fused_adamw, iterate_minibatches, move_to_device


def _regression_data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.7
    return x, y


def _mse_step(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x).squeeze(-1), y)


def test_fit_learns_a_linear_map_from_tensors():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    history = fit(model, _mse_step, _regression_data(), steps=300, batch_size=32, lr=0.05)
    assert isinstance(history, History) and history.num_steps == 300
    assert history.losses[-1] < 1e-3 < history.losses[0]
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.0, -2.0, 0.5, 3.0]]), atol=0.02, rtol=0)


def test_same_seed_same_model_and_history():
    results = []
    for _ in range(2):
        torch.manual_seed(123)  # same init
        model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
        history = fit(model, _mse_step, _regression_data(), steps=20, batch_size=16, seed=7)
        results.append((history.losses, [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(a, b)


def test_dataloader_and_dict_batches():
    x, y = _regression_data(n=64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    history = fit(nn.Linear(4, 1), _mse_step, loader, steps=12)  # the loader is re-iterated: 3 passes of 4 batches
    assert history.num_steps == 12
    history = fit(
        nn.Linear(4, 1),
        lambda m, b: nn.functional.mse_loss(m(b["x"]).squeeze(-1), b["y"]),
        {"x": x, "y": y},
        steps=8,
        batch_size=16,
    )
    assert history.num_steps == 8


def test_fit_leaves_the_callers_random_stream_alone():
    """fit draws under its own seed (dropout masks, batch order): the caller's next random numbers are the ones it
    would have drawn without the training run."""

    def draws_after(train: bool) -> torch.Tensor:
        torch.manual_seed(5)
        model = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 1))
        if train:
            fit(model, _mse_step, _regression_data(), steps=3, seed=1)
        return torch.rand(3)

    assert torch.equal(draws_after(train=True), draws_after(train=False))


def test_eval_callback_metrics_and_schedule():
    calls = []

    def evaluate(model):
        calls.append(model.training)
        return {"weight_norm": float(model.weight.norm())}

    def step(model, batch):
        loss = _mse_step(model, batch)
        return loss, {"twice": 2 * float(loss.detach())}

    model = nn.Linear(4, 1)
    history = fit(
        model, step, _regression_data(), steps=25, batch_size=32, eval_fn=evaluate, eval_every=10,
        lr_schedule="cosine", warmup_steps=5,
    )  # fmt: skip
    assert history.eval_steps == [10, 20, 25] and calls == [False, False, False]
    assert model.training  # back in train mode
    assert len(history.eval_metrics["weight_norm"]) == 3
    assert history.metrics["twice"][0] == pytest.approx(2 * history.losses[0])
    lrs = history.metrics["lr"]
    assert lrs[0] == pytest.approx(1e-3 / 5) and max(lrs) == pytest.approx(1e-3) and lrs[-1] < 1e-4
    assert history.last("weight_norm") == history.eval_metrics["weight_norm"][-1]
    assert len(history.smoothed_losses(5)) == 25


def test_fused_adamw_takes_the_same_steps_as_adamw():
    torch.manual_seed(0)
    fused_model, plain_model = nn.Linear(8, 3), nn.Linear(8, 3)
    plain_model.load_state_dict(fused_model.state_dict())
    start = fused_model.weight.detach().clone()
    fused = fused_adamw(fused_model.parameters(), lr=1e-2, weight_decay=0.1)
    plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-2, weight_decay=0.1)
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4):  # torch's fused kernel for CPU
        assert fused.defaults["fused"]
    x, y = torch.randn(16, 8), torch.randn(16, 3)
    for _ in range(20):
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (fused_model.weight - start).abs().max() > 0.05  # it did train


def test_helpers():
    batch = {"a": torch.ones(2), "b": [torch.zeros(1), "text"]}
    moved = move_to_device(batch, torch.device("cpu"))
    assert moved["b"][1] == "text" and torch.equal(moved["a"], batch["a"])
    g = torch.Generator().manual_seed(0)
    batches = list(iterate_minibatches((torch.arange(10), torch.arange(10) * 2), 4, g))
    assert len(batches) == 2 and all(torch.equal(b * 2, c) for b, c in batches)


def test_bad_inputs():
    model = nn.Linear(4, 1)
    data = _regression_data()
    with pytest.raises(TypeError, match="steps"):
        fit(model, _mse_step, data)
    with pytest.raises(ValueError, match="steps must be > 0"):
        fit(model, _mse_step, data, steps=0)
    with pytest.raises(ValueError, match="lr_schedule must be"):
        fit(model, _mse_step, data, steps=1, lr_schedule="linear")
    with pytest.raises(TypeError, match="step_fn must return a scalar loss"):
        fit(model, lambda m, b: m(b[0]), data, steps=1)
    with pytest.raises(ValueError, match="share their first dim"):
        fit(model, _mse_step, (torch.randn(5, 4), torch.randn(6)), steps=1)
    with pytest.raises(RuntimeError, match="loss is nan at step 1"):
        fit(model, lambda m, b: m(b[0]).sum() * float("nan"), data, steps=1)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        fit(lambda x: x, _mse_step, data, steps=1)


def test_evaluating_runs_without_gradients_in_eval_mode_and_restores_the_mode():
    from mmcourse.train import evaluating

    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    with evaluating(model) as inside:
        assert inside is model and not model.training and not torch.is_grad_enabled()
        assert not model(torch.ones(1, 2)).requires_grad
    assert model.training and torch.is_grad_enabled()
    model.eval()
    with pytest.raises(RuntimeError, match="boom"), evaluating(model):
        raise RuntimeError("boom")
    assert not model.training, "a model in eval mode stays in eval mode, also after an exception"


def test_module_device_reads_parameters_then_buffers_then_says_cpu():
    from mmcourse.train import module_device

    assert module_device(nn.Linear(2, 2).to("meta")) == torch.device("meta")
    only_buffer = nn.BatchNorm1d(3, affine=False).to("meta")
    assert module_device(only_buffer) == torch.device("meta")
    assert module_device(nn.Identity()) == torch.device("cpu")
