"""What the shipped Kubernetes manifests (deploy/k8s/) promise that tests hold the service to."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def grace_period_s() -> float:
    """The Deployment's terminationGracePeriodSeconds (deploy/k8s/deployment.yaml): Kubernetes kills a pod that has
    not exited that long after its SIGTERM."""
    for doc in yaml.safe_load_all((REPO / "deploy" / "k8s" / "deployment.yaml").read_text()):
        if doc and doc.get("kind") == "Deployment":
            return float(doc["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30))  # Kubernetes' default
    raise AssertionError("no Deployment in deploy/k8s/deployment.yaml")
