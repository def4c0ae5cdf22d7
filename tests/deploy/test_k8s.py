"""deploy/k8s/: every manifest of both variants (single-node/, replicated/) is valid against the newest
Kubernetes version kubernetes-validate knows, strictly (no unknown fields), and each kustomization lists every
manifest of its folder. The Deployments run non-root with probes and resource requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.deploy import DEPLOY

K8S = DEPLOY / "k8s"
VARIANTS = ("single-node", "replicated")


def manifests(variant: str) -> list[Path]:
    return sorted(p for p in (K8S / variant).glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", [p for v in VARIANTS for p in manifests(v)], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_manifest_is_valid_for_the_newest_kubernetes(path: Path) -> None:
    for document in documents(path):
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomization_lists_every_manifest(variant: str) -> None:
    (kustomization,) = documents(K8S / variant / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == [p.name for p in manifests(variant)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_deployment_is_non_root_with_probes_and_resources(variant: str) -> None:
    (deployment,) = documents(K8S / variant / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    kinds = {d["kind"] for p in manifests(variant) for d in documents(p)}
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= kinds
    assert ("PersistentVolumeClaim" in kinds) == (variant == "single-node")
