"""Run logs (utils/logs.py): a Unix time keeps its precision, metrics their
6 significant digits, and a resumed log appends under the same header."""

from utils.logs import CsvLog, Logger, read_csv


def test_time_column_keeps_millisecond_precision(tmp_path):
    path = str(tmp_path / "logs" / "x.csv")
    log = CsvLog(path)
    log.write({"time": 1_796_321_234.567_89, "loss": 0.123_456_789, "frames": 10})
    log.write({"time": 1_796_321_234.568_91, "loss": float("nan"), "frames": 20})
    rows = read_csv(path)
    # .6g would write both as 1.79632e+09 (10,000 s resolution), out of order.
    assert [r["time"] for r in rows] == ["1796321234.568", "1796321234.569"]
    assert rows[0]["loss"] == "0.123457" and rows[1]["loss"] == "nan"
    CsvLog(path).write({"frames": 30, "time": 1.5, "loss": 2.0})  # resumed: same columns
    assert [r["frames"] for r in read_csv(path)] == ["10", "20", "30"]


def test_logger_rows_are_ordered_by_time(tmp_path):
    log = Logger(str(tmp_path), "learner", tensorboard=False)
    for step in range(3):
        log.write({"loss": 1.0}, step)
    times = [float(r["time"]) for r in read_csv(str(tmp_path / "logs" / "learner.csv"))]
    assert times == sorted(times) and times[0] > 1.7e9


def test_budget_share_and_eta_by_hand():
    """Share: of the frames, or of the learner steps when nearer the end.
    ETA: 10 % at t = 0, 20 % at t = 10 s -> 1 %/s -> 80 s left; then 40 %
    at t = 20 s (2 %/s), the rate averaged 0.3 * 2 + 0.7 * 1 = 1.3 %/s ->
    60 / 1.3 = 46.2 s."""
    import pytest

    from configs import make_config
    from utils.progress import Eta, format_duration

    cfg = make_config("test", "impala", "Catch", max_frames=1000, max_learner_steps=50)
    assert cfg.budget_share(250, 5) == 0.25 and cfg.budget_share(250, 40) == 0.8
    assert cfg.budget_share(5000, 0) == 1.0
    eta = Eta(smoothing=0.3)
    assert eta.update(0.0, 0.1) is None
    assert eta.update(10.0, 0.2) == pytest.approx(80.0)
    assert eta.update(20.0, 0.4) == pytest.approx(0.6 / 0.013)
    assert eta.update(30.0, 1.0) == 0.0
    durations = [format_duration(s) for s in (None, 12, 245, 3720, 3.5 * 86400)]
    assert durations == ["?", "12s", "4m05s", "1h02m", "3.5 days"]
