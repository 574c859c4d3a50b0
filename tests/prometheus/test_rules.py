"""deploy/prometheus/rules.yml as shipped: promtool finds it valid, its unit tests (rules.test.yml) pass, every alert has a case there where it fires and one where it stays quiet, and the PSI recording rule's known case is the score artifacts.reference.psi gives.

Needs Debian's prometheus package (promtool); `make test` installs it. Without it these tests fail, naming what to
install: they never skip.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from artifacts import reference as ref
from testkit import prometheus

REPO = Path(__file__).resolve().parents[2]
OPERATIONS = REPO / "docs" / "operations.md"
NAME = re.compile(r"^[a-z_]+:[a-z_]+:[a-z0-9_]+$")  # level:metric:operations


@pytest.fixture(scope="module")
def promtool() -> str:
    path = prometheus.binary("promtool")
    if path is None:
        pytest.fail(prometheus.missing("promtool"))
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=120, cwd=REPO)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(prometheus.RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def unit_tests() -> list[dict]:
    return yaml.safe_load(prometheus.TESTS.read_text())["tests"]


def test_promtool_check_rules(promtool):
    out = run(promtool, "check", "rules", str(prometheus.RULES))
    assert out.returncode == 0, f"promtool check rules failed:\n{out.stdout}{out.stderr}"


def test_promtool_test_rules(promtool):
    out = run(promtool, "test", "rules", str(prometheus.TESTS))
    assert out.returncode == 0, f"promtool test rules failed:\n{out.stdout}{out.stderr}"


def test_the_example_config_is_valid(promtool):
    out = run(promtool, "check", "config", str(prometheus.RULES.parent / "prometheus.yml"))
    assert out.returncode == 0, f"promtool check config failed:\n{out.stdout}{out.stderr}"


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet():
    fires, quiet = set(), set()
    for group in unit_tests():
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    shipped = set(alerts())
    assert shipped - fires == set(), "alerts of rules.yml with no case in rules.test.yml where they fire"
    assert shipped - quiet == set(), "alerts of rules.yml with no case in rules.test.yml where they stay quiet"
    assert (fires | quiet) - shipped == set(), "rules.test.yml tests alerts that rules.yml does not have"


def test_rules_are_named_and_annotated_for_an_operator():
    """Recording rules are named level:metric:operations; every alert has a severity, a summary and a description
    that links its section of docs/operations.md, which exists."""
    headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", OPERATIONS.read_text(), re.MULTILINE)}
    for rule in rules():
        if "record" in rule:
            assert NAME.match(rule["record"]), rule["record"]
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        anchor = f"docs/operations.md#{name.lower()}"
        assert anchor in rule["annotations"]["description"], f"{name}'s description does not link {anchor}"
        assert name.lower() in headings, f"docs/operations.md has no section {name}"


def step(values: str) -> float:
    """The increase per interval of a promtool series written 'a+bxn' (b) or 'axn' (0)."""
    match = re.fullmatch(r"(-?[\d.]+)(?:\+([\d.]+))?x\d+", values.strip())
    assert match, f"write the series of the PSI case as 'a+bxn' or 'axn', not {values!r}"
    return float(match.group(2) or 0)


def test_the_psi_case_is_the_score_artifacts_reference_gives():
    """The PSI recording rule's known case in rules.test.yml (predictions split over two replicas) is
    artifacts.reference.psi of the summed class shares against the reference: the gauge's formula."""
    cases = [(group, case) for group in unit_tests() for case in group.get("promql_expr_test", [])
             if "model_version:model_predictions:psi_rate10m" in case["expr"]]
    assert cases, "rules.test.yml has no case for model_version:model_predictions:psi_rate10m"
    for group, case in cases:
        counts, reference = np.zeros(10), np.zeros(10)
        for series in group["input_series"]:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', series["series"]))
            if series["series"].startswith("model_predictions_total{"):
                counts[int(labels["class"])] += step(series["values"])
            elif series["series"].startswith("model_reference_class_share{"):
                reference[int(labels["class"])] = float(series["values"].split("x")[0])
        expected = ref.psi(ref.shares(counts), reference)
        (sample,) = case["exp_samples"]
        assert sample["value"] == pytest.approx(expected, abs=1e-6), (group["name"], expected)
        assert expected > 1  # a case the alert fires on, not a PSI near 0


def test_the_shortened_rules_change_durations_only(promtool, tmp_path):
    """The e2e test's copy (testkit.prometheus.shortened): every range and `for:` divided by 30, in seconds, the rest
    of the file as shipped; and promtool finds it valid."""
    shipped = prometheus.RULES.read_text()
    short = prometheus.shortened(shipped)
    ranges = re.findall(r"\[(\w+)\]", shipped)
    fors = re.findall(r"^\s*for:\s*(\w+)\s*$", shipped, re.MULTILINE)
    assert ranges and fors
    assert re.findall(r"\[(\w+)\]", short) == [f"{round(prometheus.seconds(r) / 30)}s" for r in ranges]
    assert re.findall(r"^\s*for:\s*(\w+)\s*$", short, re.MULTILINE) == \
        [f"{round(prometheus.seconds(f) / 30)}s" for f in fors]
    blank = re.compile(r"\[\w+\]|^(\s*for:\s*)\w+", re.MULTILINE)
    assert blank.sub(r"\1", short) == blank.sub(r"\1", shipped)
    path = tmp_path / "rules.yml"
    path.write_text(short)
    out = run(promtool, "check", "rules", str(path))
    assert out.returncode == 0, f"promtool check rules failed on the shortened copy:\n{out.stdout}{out.stderr}"
