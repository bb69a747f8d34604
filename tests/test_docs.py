"""The repository explains itself: docs/interface.md lists every variable, command and endpoint the code defines
(and nothing it does not), and nothing tracked refers to a path outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click

from integration import create_app

from .conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
INTERFACE = (ROOT / "docs" / "interface.md").read_text()
VARIABLE = re.compile(r"[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)+")


def _code_variables() -> set[str]:
    from integration import config

    source = (ROOT / "integration" / "config.py").read_text()
    return set(re.findall(r'"(' + VARIABLE.pattern + r')"', source)) - set(config.__all__)  # its Python names


def _table(section: str) -> str:
    start = INTERFACE.index(f"## {section}")
    end = INTERFACE.find("\n## ", start + 3)
    return INTERFACE[start:end if end > 0 else None]


def _commands() -> set[str]:
    app = create_app(make_settings())
    found: set[str] = set()

    def walk(cmd: click.Command, name: str) -> None:
        if isinstance(cmd, click.Group):
            for sub_name, sub in cmd.commands.items():
                walk(sub, f"{name} {sub_name}")
        else:
            found.add(name)

    for name, cmd in app.cli.commands.items():
        walk(cmd, name)
    return found


def _endpoints() -> set[str]:
    app = create_app(make_settings())
    found = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"<\1>", rule.rule)
        if path.startswith("/static/"):
            continue
        found.add("/rq/…" if path.startswith("/rq/") else path)
    return found


def test_every_configuration_variable_is_documented_and_every_documented_one_exists():
    documented = set(VARIABLE.findall(_table("Configuration")).__iter__())
    local_only = {"PORT", "LOCAL_REDIS_PORT", "LOCAL_RUN_DIR", "WEB_CONCURRENCY"}
    code = _code_variables()
    assert code - documented == set(), "variables the code reads that docs/interface.md does not list"
    assert documented - code - local_only == set(), "variables docs/interface.md lists that the code does not read"


def test_every_command_is_documented_and_every_documented_one_exists():
    table = _table("Command line")
    documented = {re.sub(r"\s+", " ", m).strip() for m in re.findall(r"^\| `([a-z][a-z ]*[a-z])(?: [^`]*)?` \|", table,
                                                                      re.M)}
    assert _commands() == documented


def test_every_endpoint_is_documented_and_every_documented_one_exists():
    table = _table("HTTP endpoints")
    documented = set(re.findall(r"`(?:(?:GET|POST|PUT|DELETE) )?(/[^` ?]*)", table))
    documented = {"/rq/…" if d.startswith("/rq/") else d for d in documented}
    assert _endpoints() == documented


def test_nothing_tracked_points_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = [path for path in tracked if not path.startswith(".ci/") and (ROOT / path).is_file()
                 and ".." + "/shared" in (ROOT / path).read_text(errors="replace")]
    assert offenders == []
