"""A model's life under load, small (harness.lifecycle): a retrained thermometer published, shadowed, a 10 % canary,
promoted through the gate, rolled back and switched there and back by the repository extension (HTTP and gRPC) and
by the serving file, a broken version refused, under closed-loop HTTP and gRPC clients through every worker."""

import argparse

import artifacts
from harness.lifecycle import KEYED_CLIENTS, run


def test_a_model_s_life_loses_no_request_and_every_worker_follows_every_switch(record_property):
    args = argparse.Namespace(model=artifacts.TEMPERATURE_MLP, new_version=None, seed=7, clients=16, grpc_clients=16,
                              workers=None, warmup=1.0, phase=3.0, hold=3.0, switches=2, canary_requests=3000,
                              data_root="data", force_promote=False)
    results = run(args)
    record_property("figures", {k: v for k, v in results.items() if k != "switches"})
    t = results["traffic"]
    assert t["http_lost"] == 0 and t["grpc_lost"] == 0, t  # not one request lost
    assert results["new_version"] != results["old_version"]  # the retrain published a new version
    assert results["shadow"]["rows"].get("agree", 0) + results["shadow"]["rows"].get("disagree", 0) > 0
    assert 0.08 <= results["canary"]["share"] <= 0.12 and results["canary"]["keyed"]["one_side"] == KEYED_CLIENTS
    assert results["promote"]["exit"] == 0, results["promote"]["output"]
    for step in (results["promote"]["switch"], results["rollback"], *results["switches"], results["broken"]):
        assert step["passed"], step  # every answer 2 s after the switch names the new version, in every worker
    assert len(results["switches"]) == 8 and all(s.get("status", 200) == 200 for s in results["switches"])
    assert results["broken"]["status"] == 400 and "checksums" in results["broken"]["error"]
    assert results["passed"]
