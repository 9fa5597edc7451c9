"""``fedgate learn site|run|register-site`` on bad input: a clear message and exit status 2,
before any Flower process starts."""

from __future__ import annotations

from pathlib import Path

from tests.learning.cohorts import PLAN
from tests.support.process import run_fedgate


def test_run_with_a_broken_plan_or_hub_config_says_what_is_wrong(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.replace("family: logistic_regression", "family: forest"))
    hub = tmp_path / "hub.yaml"
    hub.write_text("sites: [{name: a, url: 'http://127.0.0.1:9'}]\nlearning: {port: 0}\n")
    broken_plan = run_fedgate("learn", "run", "--hub-config", str(hub), str(plan), "--out", "x")
    assert broken_plan.returncode == 2
    assert "model" in broken_plan.stderr and "Traceback" not in broken_plan.stderr
    plan.write_text(PLAN)
    broken_hub = run_fedgate("learn", "run", "--hub-config", str(hub), str(plan), "--out", "x")
    assert broken_hub.returncode == 2
    assert "learning.port" in broken_hub.stderr
    assert "Traceback" not in broken_hub.stderr
    hub.write_text("sites: [{name: a, url: 'http://127.0.0.1:9'}\n")  # unclosed
    not_yaml = run_fedgate("learn", "run", "--hub-config", str(hub), str(plan), "--out", "x")
    assert not_yaml.returncode == 2, not_yaml.stderr
    assert f"config file {hub} is not valid YAML" in not_yaml.stderr
    assert "Traceback" not in not_yaml.stderr


def test_site_and_register_site_refuse_bad_files(tmp_path: Path) -> None:
    missing = run_fedgate(
        "learn", "site", "--config", str(tmp_path / "none.yaml"), "--superlink", "127.0.0.1:9"
    )
    assert missing.returncode == 2 and "cannot read config file" in missing.stderr
    hub = tmp_path / "hub.yaml"
    hub.write_text("sites: [{name: a, url: 'http://127.0.0.1:9'}]\n")
    key = tmp_path / "site.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1cnQ= not-ec\n")
    refused = run_fedgate(
        "learn", "register-site", "--hub-config", str(hub), str(key), "--name", "north"
    )
    assert refused.returncode == 2 and str(key) in refused.stderr
    assert "Traceback" not in refused.stderr


def test_validate_says_which_secure_aggregation_plans_cannot_run(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    cases = {
        "min_sites: 3\nprotection: {secure_aggregation: true}\n": None,
        "min_sites: 2\nprotection: {secure_aggregation: true}\n": "min_sites of at least 3",
        "min_sites: 3\nprotection: {secure_aggregation: true, differential_privacy: "
        "{clipping_norm: 1.0, noise_multiplier: 0.5}}\n": "cannot be combined",
    }
    for extra, problem in cases.items():
        plan.write_text(PLAN + extra)
        validated = run_fedgate("learn", "validate", str(plan))
        if problem is None:
            assert validated.returncode == 0, validated.stderr
        else:
            assert validated.returncode == 2 and problem in validated.stderr
            assert "Traceback" not in validated.stderr
