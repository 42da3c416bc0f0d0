from __future__ import annotations

import io
import logging

import pytest

from imgpack.progress import Progress


def test_log_mode_prints_plain_periodic_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imgpack")
    bar = Progress(10, "convert", mode="log", interval=0.0)
    bar.update(4)
    bar.update(6)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("convert: 4/10 imgs (40%)")
    assert lines[-1].startswith("convert: 10/10 imgs (100%)")


def test_auto_mode_is_log_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert Progress(1, "x").mode == "log"


def test_bar_mode_draws_a_tqdm_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = Progress(5, "convert", mode="bar")
    bar.update(5)
    bar.close()
    assert "5/5" in err.getvalue() and "convert" in err.getvalue()
