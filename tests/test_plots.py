"""Plot builders: the figures carry the data they claim to show."""
import math

from aftlab.report import plots


def test_training_curves_draw_raw_and_smoothed_lines_per_method():
    log = [{"step": i, "neg_score": -0.2 - (0.05 if i % 2 else 0.0), "gap": 0.1} for i in range(40)]
    fig = plots.training_curves({"aft_bc": log, "rft": log}, keys=("neg_score", "gap"), smooth=10)
    assert len(fig.data) == 2 * 2 * 2  # methods x keys x (raw, smoothed)
    raw, smooth = fig.data[0], fig.data[1]
    assert raw.opacity < 1 and list(raw.y) == [r["neg_score"] for r in log]
    assert max(smooth.y[10:]) - min(smooth.y[10:]) < 0.01 < max(raw.y) - min(raw.y)  # the zig-zag averages out
    assert math.isclose(smooth.y[-1], sum(r["neg_score"] for r in log[-10:]) / 10)
    plain = plots.training_curves({"aft_bc": log}, keys=("gap",), smooth=1)
    assert len(plain.data) == 1 and list(plain.data[0].y) == [0.1] * 40
