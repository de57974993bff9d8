"""An installed copy, not the checkout: a wheel built from this tree, installed into a fresh
virtual environment (its dependencies from the package index, as `pip install .`, `pipx`
and `uv tool install` get them), run from a folder that is not the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from feedserver import FeedServer, Route

from aggregator.config import dump_yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_creates_its_schema_and_runs(tmp_path: Path, feed_server: FeedServer) -> None:
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("aggregator-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
                               capture_output=True, text=True, timeout=900)  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGGREGATOR_", "PYTHON"))}
    aggregator = str(venv / "bin" / "aggregator")

    demo = subprocess.run([aggregator, "demo", "--no-serve"], cwd=elsewhere, capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert "were carried by more than one outlet" in demo.stdout

    feed_server.set("/f.xml", Route(body=(REPO / "tests" / "data" / "rss20.xml").read_bytes()))
    (elsewhere / "x").mkdir()
    config = elsewhere / "x" / "feeds.yaml"
    config.write_text(dump_yaml({"settings": {"http": "off"}, "feeds": [feed_server.url("/f.xml")]}))
    db = elsewhere / "y" / "d.db"
    fetched = subprocess.run([aggregator, "--config", str(config), "--db", str(db), "fetch"], cwd=elsewhere,
                             capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert "0 errors" in fetched.stderr and "no such table" not in fetched.stderr
    listed = subprocess.run([aggregator, "--config", str(config), "--db", str(db), "clusters", "list", "--since", "all",
                             "--min-size", "1"], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert listed.returncode == 0 and listed.stdout.count("\n") >= 2, listed.stderr
