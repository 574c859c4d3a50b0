"""A rolling update behind HAProxy under load (harness.rollout): two replicas replaced in turn by replicas serving a
retrained temperature model; no request fails, the answers' version switches from the old to the new, and each
replica exits 0 inside the grace period the Deployment gives (how soon after its drain is a figure of harness.rollout,
not a test: a busy host stretches it)."""

import json
from pathlib import Path

import pytest

from harness.rollout import haproxy_path, new_version_tree, one_run, retrain
from testkit.manifests import grace_period_s


@pytest.fixture(scope="module")
def new_version(tmp_path_factory):
    where = tmp_path_factory.mktemp("rollout")
    return new_version_tree(retrain(where / "models"), where)


def test_a_rolling_update_behind_haproxy_loses_no_request(new_version, record_property):
    haproxy_path()  # `make test` installs Debian's haproxy; without it this fails, saying how to install it
    run = one_run(new_version, clients=16, warmup=2.0, settle=2.0, workers=None, env={},
                  exit_within_s=grace_period_s())
    figures = {k: v for k, v in run.items() if k != "logs"}
    record_property("figures", figures)
    if not run["passed"]:  # everything a reader needs: statuses, each step, and when HAProxy took a server in or out
        log = Path(run["logs"]) / "haproxy.log"
        pytest.fail("the rolling update failed:\n" + json.dumps(figures, indent=1)[:8000] + "\nHAProxy's log:\n"
                    + (log.read_text()[-6000:] if log.exists() else "(none)"))
