"""scripts/mlflow_screenshots.py without a browser or server: what it refuses, in one line, before it
starts anything."""
from __future__ import annotations

import socket

import pytest

from pipeline.errors import PipelineError
from scripts import mlflow_screenshots as shots


def test_a_missing_store_is_one_line_and_no_server_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shots, "mlflow_server", lambda *a, **k: pytest.fail("a server was started"))
    store = tmp_path / "none" / "mlflow.db"
    assert shots.main(["--store", f"sqlite:///{store}", "--out", str(tmp_path / "images")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {store}: MLflow store not found")
    assert not (tmp_path / "images").exists() and not store.parent.exists()


def test_no_browser_names_the_package_to_install(monkeypatch):
    monkeypatch.setattr(shots.shutil, "which", lambda name: None)
    with pytest.raises(PipelineError) as exc:
        shots.browser()
    assert str(exc.value) == "chromium: not installed: apt-get install -y chromium (as root)"


def test_the_port_is_free_on_the_loopback_address():
    port = shots.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # nothing holds it
