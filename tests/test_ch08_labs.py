"""Chapter 8's lab figures: the model-cost panels and the quantization table with an untimed row."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mmcourse.labs.ch08_bit_width import show_quantization_table  # noqa: E402
from mmcourse.labs.ch08_model_zoo import show_model_costs  # noqa: E402


def test_show_model_costs_draws_two_panels():
    zoo = [{"model": "a", "params_m": 10.0}, {"model": "b", "params_m": 100.0}]
    timed = [{"model": "a", "gflops": 1.0, "fp32_b1_ms": 5.0}, {"model": "b", "gflops": 4.0, "fp32_b1_ms": 18.0}]
    fig = show_model_costs(zoo, timed, timed_label=" (quarter depth)")
    assert len(fig.axes) == 2 and "quarter depth" in fig.axes[1].get_xlabel()
    plt.close(fig)
    with pytest.raises(ValueError):
        show_model_costs([], timed)


def test_quantization_table_marks_a_row_without_latency_as_not_timed():
    rows = [{"model": "fp32", "size_mb": 4.0, "image_ms": 10.0}, {"model": "scratch", "size_mb": 1.0, "image_ms": None},
            {"model": "int8", "size_mb": 1.1, "image_ms": 2.0}]
    fig = show_quantization_table(rows)
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert any("not timed" in t for t in texts) and any("5.00x faster" in t for t in texts)
    plt.close(fig)
