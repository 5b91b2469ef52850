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


SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "TRAINYARD_ADMIN_KEY")


def _compose_config(env_file: Path) -> subprocess.CompletedProcess:
    # Only the given env file: no .env of the checkout, no variables of the shell.
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [_compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "--env-file", str(env_file),
         "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    """.env.example filled in, as a user would."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}=secret-{name.lower()}-{'x' * 32}" if name in SECRETS else line)
    path.write_text("\n".join(lines) + "\n")
    return path


def _rendered_config(env_file: Path) -> dict:
    out = _compose_config(env_file)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_secrets_come_from_an_env_file_that_is_not_committed(env_file, tmp_path):
    example = (ROOT / ".env.example").read_text()
    for name in SECRETS:
        assert f"\n{name}=\n" in example, f"{name}: listed in .env.example, and empty"
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()  # not in the build context
    tracked = subprocess.run(["git", "ls-files", ".env"], capture_output=True, text=True, cwd=ROOT)
    assert tracked.stdout.strip() == ""
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "secret-" not in compose and ":-trainyard}" not in compose  # no default passwords
    # The example as it is (empty values) is refused, naming what is missing.
    empty = _compose_config(ROOT / ".env.example")
    assert empty.returncode != 0 and "set POSTGRES_PASSWORD in .env" in empty.stderr
    config = _rendered_config(env_file)
    services = config["services"]
    api_env = services["api"]["environment"]
    assert api_env["TRAINYARD_REQUIRE_KEYS"] == "true"
    assert api_env["TRAINYARD_ADMIN_KEY"] == "secret-trainyard_admin_key-" + "x" * 32
    assert ":secret-postgres_password-" in api_env["TRAINYARD_DATABASE_URL"]
    assert services["worker"]["environment"]["TRAINYARD_BROKER_URL"].startswith(
        "redis://:secret-redis_password-")
    assert "TRAINYARD_ADMIN_KEY" not in services["worker"]["environment"]
    # the broker password is not on redis-server's command line (ps would show it)
    assert "secret-" not in " ".join(services["redis"]["command"])
    # only the API publishes a port
    assert [name for name, s in services.items() if s.get("ports")] == ["api"]


def test_compose_file_is_valid_and_has_the_services(env_file):
    config = _rendered_config(env_file)
    services = config["services"]
    assert {"postgres", "redis", "api", "worker"} <= set(services)
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name], name
        assert services[name].get("volumes"), f"{name} keeps its data in a volume"
    # Workers need a GPU reservation and no shared volume: checkpoints live in Postgres.
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) and d.get("count") == "all" for d in devices)
    # ...every GPU of its host, shared out between several jobs at once
    command = services["worker"]["command"]
    assert command[:2] == ["trainyard", "worker"] and command[command.index("--jobs") + 1] == "2"
    assert not services["worker"].get("volumes")
    assert "container_name" not in services["worker"], "container_name would block --scale"
    env = services["worker"]["environment"]
    assert env["TRAINYARD_DATABASE_URL"].startswith("postgresql")
    assert env["TRAINYARD_BROKER_URL"].startswith("redis://")


def test_each_service_command_is_a_real_entry_point(env_file):
    config = _rendered_config(env_file)
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
