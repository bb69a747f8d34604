"""Procfile, render.yaml and .env.example agree with each other and with the configuration the code reads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from integration.config import REQUIRED, WEB, WORKER, WORKER_ONLY

ROOT = Path(__file__).resolve().parents[1]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip())


def blueprint() -> dict:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def test_render_runs_the_procfile_commands():
    services = {s["name"]: s for s in blueprint()["services"]}
    web, worker = services["integration-web"], services["integration-worker"]
    assert web["startCommand"] == procfile()["web"].strip().replace("${PORT:-8000}", "$PORT")
    assert worker["startCommand"] == procfile()["worker"].strip() == "python -m workers"
    assert web["healthCheckPath"] == "/healthz"


def test_key_value_is_wired_to_redis_url_and_never_evicts():
    services = {s["name"]: s for s in blueprint()["services"]}
    kv = services["integration-redis"]
    assert kv["type"] == "keyvalue" and kv["maxmemoryPolicy"] == "noeviction"
    for name in ("integration-web", "integration-worker"):
        [redis_url] = [e for e in services[name]["envVars"] if e.get("key") == "REDIS_URL"]
        assert redis_url["fromService"] == {"type": "keyvalue", "name": "integration-redis",
                                            "property": "connectionString"}


def test_every_required_secret_is_declared_without_a_value():
    services = {s["name"]: s for s in blueprint()["services"]}
    for name, role in (("integration-web", WEB), ("integration-worker", WORKER)):
        declared = {e["key"]: e for e in services[name]["envVars"] if "key" in e}
        for key in REQUIRED[role]:
            assert declared[key] == {"key": key, "sync": False}, (name, key)


def test_the_web_service_is_given_no_worker_only_credential():
    services = {s["name"]: s for s in blueprint()["services"]}
    web = {e["key"] for e in services["integration-web"]["envVars"] if "key" in e}
    shared = {e["key"] for group in blueprint()["envVarGroups"] for e in group["envVars"]}
    assert web & set(WORKER_ONLY) == set()
    assert shared & set(WORKER_ONLY) == set()  # nor through the group both services read


def test_env_example_lists_every_variable_of_the_readme_table():
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `([A-Z_]+)`", readme, flags=re.M))
    assert table, "README configuration table not found"
    for name in table:
        assert re.search(rf"^#? ?{name}=", example, flags=re.M), name


def _pins(text: str) -> dict[str, str]:
    return {m[1].lower().replace("_", "-"): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\#]+)", text, re.M)}


def test_deploys_install_the_hash_locked_file_on_a_current_python():
    services = {s["name"]: s for s in blueprint()["services"]}
    for name in ("integration-web", "integration-worker"):
        build = services[name]["buildCommand"]
        assert "--require-hashes" in build and "-r requirements.lock" in build, build
        [version] = [e["value"] for e in services[name]["envVars"] if e.get("key") == "PYTHON_VERSION"]
        major, minor, patch = map(int, version.split("."))
        assert (major, minor) == (3, 11) and patch >= 15, version


def test_the_lock_pins_every_requirement_at_its_version_with_hashes():
    wanted = _pins((ROOT / "requirements.txt").read_text())
    lock_text = (ROOT / "requirements.lock").read_text()
    locked = _pins(lock_text)
    for name, version in wanted.items():
        assert locked.get(name) == version, (name, version, locked.get(name))
    entries = re.split(r"\n(?=[A-Za-z])", lock_text.split("\n\n", 1)[-1].strip())
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)


RECONCILE_KEYS = ("RECONCILE_INTERVAL_MINUTES", "RECONCILE_GRACE_MINUTES", "DUNNING_SCHEDULE_DAYS",
                  "SETTLEMENT_CHECK_AFTER_HOURS", "CATALOG_SYNC_INTERVAL_MINUTES", "CATALOG_FULL_SYNC_HOURS")


def test_reconcile_settings_agree_everywhere():
    """README default = .env.example value = render.yaml value = the code's default, for the periodic jobs' settings."""
    from integration.config import Settings

    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    shared = {e["key"]: e.get("value") for group in blueprint()["envVarGroups"] for e in group["envVars"]}
    code = Settings.from_env({**{name: "x" for name in REQUIRED[WORKER]}, "DASHBOARD_PASSWORD": "x" * 16})
    for name in RECONCILE_KEYS:
        [documented] = re.findall(rf"^\| `{name}` \| `([^`]*)`", readme, flags=re.M)
        [listed] = re.findall(rf"^{name}=(\S*)", example, flags=re.M)
        default = getattr(code, name.lower())
        as_text = ",".join(f"{d:g}" for d in default) if isinstance(default, tuple) else str(default)
        assert documented == listed == shared[name] == as_text, name
