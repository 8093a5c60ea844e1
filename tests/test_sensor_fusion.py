import pytest
import torch

from mmcourse.labs.ch07_sensor_fusion import (
    GatedFusion,
    LinearFusion,
    build_gated_fusion,
    calibration_data,
    day_night_std,
    estimate_noise_std,
    fit_linear_fusion,
    fuse_inverse_variance,
    fused_std,
    inverse_variance_weights,
    rmse,
    simulate_readings,
    train_gated_fusion,
)


def _truth(n=4000, seed=0):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) * 50


def test_simulate_readings_shape_noise_and_determinism():
    truth = _truth()
    a = simulate_readings(truth, [1.0, 3.0], generator=torch.Generator().manual_seed(1))
    b = simulate_readings(truth, [1.0, 3.0], generator=torch.Generator().manual_seed(1))
    c = simulate_readings(truth, [1.0, 3.0], generator=torch.Generator().manual_seed(2))
    assert a.shape == (4000, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    measured = estimate_noise_std(a, truth)
    assert torch.allclose(measured, torch.tensor([1.0, 3.0]), rtol=0.06)


def test_simulate_readings_bias_and_per_sample_noise():
    truth = _truth(3000)
    std = torch.stack([torch.full((3000,), 0.5), torch.linspace(0.1, 4.0, 3000)], dim=1)
    readings = simulate_readings(truth, std, bias=[2.0, 0.0], generator=torch.Generator().manual_seed(0))
    errors = readings - truth[:, None]
    assert abs(float(errors[:, 0].mean()) - 2.0) < 0.05
    # the second sensor gets noisier along the samples
    assert float(errors[:1000, 1].std()) < 0.5 * float(errors[-1000:, 1].std())


def test_inverse_variance_beats_each_sensor_and_the_plain_mean():
    truth = _truth()
    noise = [1.0, 2.0]
    readings = simulate_readings(truth, noise, generator=torch.Generator().manual_seed(3))
    fused = rmse(fuse_inverse_variance(readings, noise), truth)
    singles = [rmse(readings[:, s], truth) for s in range(2)]
    assert fused < min(singles)
    assert fused < rmse(readings.mean(dim=1), truth)
    # the plain mean is worse than the better sensor here: (1 + 4) / 4 > 1
    assert rmse(readings.mean(dim=1), truth) > singles[0]
    assert fused == pytest.approx(float(fused_std(noise)), rel=0.05)


def test_weights_and_fused_std_formulas():
    weights = inverse_variance_weights([1.0, 2.0])
    assert torch.allclose(weights, torch.tensor([0.8, 0.2]))
    per_sample = inverse_variance_weights(torch.tensor([[1.0, 1.0], [1.0, 3.0]]))
    assert torch.allclose(per_sample.sum(dim=1), torch.ones(2))
    assert per_sample[0, 0] == pytest.approx(0.5)
    assert float(fused_std([1.0, 2.0])) == pytest.approx(1 / (1 + 0.25) ** 0.5)
    assert float(fused_std([2.0])) == pytest.approx(2.0)
    assert float(fused_std([1.0, 100.0])) < 1.0


def test_learned_linear_fusion_rediscovers_inverse_variance_and_absorbs_bias():
    truth = _truth()
    readings = simulate_readings(truth, [1.0, 2.0], bias=[0.0, 3.0], generator=torch.Generator().manual_seed(4))
    fusion = fit_linear_fusion(readings[:2000], truth[:2000])
    assert isinstance(fusion, LinearFusion)
    assert torch.allclose(fusion.weights, torch.tensor([0.8, 0.2]), atol=0.03)
    unbiased = readings[2000:] - torch.tensor([0.0, 3.0])
    assert rmse(fusion(readings[2000:]), truth[2000:]) < rmse(fuse_inverse_variance(readings[2000:], [1.0, 2.0]),
                                                               truth[2000:]) + 0.02
    assert rmse(fusion(readings[2000:]), truth[2000:]) < min(rmse(unbiased[:, s], truth[2000:]) for s in range(2))
    assert "weights=" in repr(fusion)


def test_gated_fusion_uses_context_to_beat_fixed_weights():
    g = torch.Generator().manual_seed(5)
    truth = torch.rand(4000, generator=g) * 50
    light = torch.rand(4000, generator=g)
    std = torch.stack([day_night_std(light, 0.5, 4.0), torch.full((4000,), 1.5)], dim=1)
    readings = simulate_readings(truth, std, generator=g)
    cal, test = slice(0, 2000), slice(2000, None)
    fixed = fuse_inverse_variance(readings[test], estimate_noise_std(readings[cal], truth[cal]))
    data = calibration_data(readings[cal], light[cal, None], truth[cal])
    model = build_gated_fusion(2, 1, seed=0)
    history = train_gated_fusion(model, data, steps=120, seed=0)
    assert not model.training
    with torch.no_grad():
        gated = model(readings[test], light[test, None])
        weights = model.weights(torch.tensor([[0.0], [1.0]]))
    assert rmse(gated, truth[test]) < rmse(fixed, truth[test]) - 0.03
    assert rmse(gated, truth[test]) < min(rmse(readings[test, s], truth[test]) for s in range(2))
    # night: trust the radar (sensor 1); day: trust the camera (sensor 0)
    assert weights[0, 1] > 0.7 and weights[1, 0] > 0.6
    again = build_gated_fusion(2, 1, seed=0)
    train_gated_fusion(again, data, steps=120, seed=0)
    with torch.no_grad():
        assert torch.equal(again(readings[test], light[test, None]), gated)
    assert history.num_steps == 120


def test_day_night_std():
    std = day_night_std(torch.tensor([0.0, 0.5, 1.0]), 1.0, 3.0)
    assert torch.allclose(std, torch.tensor([3.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="light"):
        day_night_std(torch.tensor([1.5]), 1.0, 3.0)
    with pytest.raises(ValueError, match="night_std"):
        day_night_std(torch.tensor([0.5]), 1.0, -1.0)


def test_validation_errors_name_the_parameter():
    truth = _truth(10)
    with pytest.raises(ValueError, match="noise_std"):
        simulate_readings(truth, [1.0, 0.0])
    with pytest.raises(TypeError, match="noise_std"):
        simulate_readings(truth, 1.0)
    with pytest.raises(ValueError, match="noise_std"):
        simulate_readings(truth, torch.ones(5, 2))
    with pytest.raises(ValueError, match="bias"):
        simulate_readings(truth, [1.0, 2.0], bias=[1.0])
    with pytest.raises(ValueError, match="truth"):
        simulate_readings(torch.ones(3, 2), [1.0])
    with pytest.raises(ValueError, match="noise_std"):
        fuse_inverse_variance(torch.ones(10, 3), [1.0, 2.0])
    with pytest.raises(ValueError, match="readings"):
        estimate_noise_std(torch.ones(10, 2), torch.ones(9))
    with pytest.raises(ValueError, match="calibration"):
        fit_linear_fusion(torch.ones(2, 2), torch.ones(2))
    with pytest.raises(ValueError, match="ridge"):
        fit_linear_fusion(torch.randn(10, 2), torch.randn(10), ridge=-1.0)
    with pytest.raises(ValueError, match="context"):
        GatedFusion(2, 1).weights(torch.ones(4, 3))
    with pytest.raises(ValueError, match="readings"):
        GatedFusion(2, 1)(torch.ones(4, 3), torch.ones(4, 1))
    with pytest.raises(ValueError, match="estimate"):
        rmse(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="steps"):
        train_gated_fusion(GatedFusion(2, 1), calibration_data(torch.ones(8, 2), torch.ones(8, 1), torch.ones(8)),
                           steps=0)
    with pytest.raises(ValueError, match="truth"):
        calibration_data(torch.ones(8, 2), torch.ones(8, 1), torch.ones(7))
    with pytest.raises(ValueError, match=r"readings \(N, 3\)"):
        train_gated_fusion(GatedFusion(3, 1), calibration_data(torch.ones(8, 2), torch.ones(8, 1), torch.ones(8)))
