"""docker-compose.yml is valid and each service starts a command that exists."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from trainyard.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose not installed (Debian package docker-compose)")
        pytest.skip("docker-compose not installed (Debian package docker-compose)")
    return binary


def _rendered_config() -> dict:
    out = subprocess.run(
        [_compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_file_is_valid_and_has_the_services():
    config = _rendered_config()
    services = config["services"]
    assert {"postgres", "redis", "api", "worker"} <= set(services)
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name], name
        assert services[name].get("volumes"), f"{name} keeps its data in a volume"
    # Workers need a GPU reservation and no shared volume: checkpoints live in Postgres.
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert not services["worker"].get("volumes")
    assert "container_name" not in services["worker"], "container_name would block --scale"
    env = services["worker"]["environment"]
    assert env["TRAINYARD_DATABASE_URL"].startswith("postgresql")
    assert env["TRAINYARD_BROKER_URL"].startswith("redis://")


def test_each_service_command_is_a_real_entry_point():
    config = _rendered_config()
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    for name in ("api", "worker"):
        command = config["services"][name]["command"]
        assert command[0] == "trainyard", f"{name} runs the console script"
        assert command[1] in subcommands, f"{name}: unknown subcommand {command[1]}"
        # argparse accepts the rest of the command line as written
        build_parser().parse_args(command[1:])
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'trainyard = "trainyard.cli:main"' in pyproject
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("api", "worker", "models", "db", "trainyard"):
        assert f"COPY {package} " in dockerfile, f"the image must contain {package}/"
