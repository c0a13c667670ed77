"""Staged (dry-run) policies: StagedGlobalNetworkPolicy, StagedNetworkPolicy,
StagedKubernetesNetworkPolicy, with upstream's field names.

A staged policy carries the spec of the policy it stages plus
``stagedAction``: ``Set`` (default; add the policy, or replace the enforced
one of the same name) or ``Delete`` (remove the enforced one of the same
name). Staged policies are stored and shown, never programmed: Felix and
``calicoctl policy explain`` report what they *would* do
(:mod:`felix.calc.evaluate`).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

from datastore.models.common import CalicoModel, Resource
from datastore.models.policy import GlobalNetworkPolicySpec, NetworkPolicySpec

StagedAction = Literal["Set", "Delete"]


class StagedGlobalNetworkPolicySpec(GlobalNetworkPolicySpec):
    staged_action: Optional[StagedAction] = Field(None, alias="stagedAction")


class StagedNetworkPolicySpec(NetworkPolicySpec):
    staged_action: Optional[StagedAction] = Field(None, alias="stagedAction")


class StagedKubernetesNetworkPolicySpec(CalicoModel):
    """A ``networking.k8s.io/v1`` NetworkPolicy spec (kept as given) plus ``stagedAction``."""

    staged_action: Optional[StagedAction] = Field(None, alias="stagedAction")
    pod_selector: dict[str, Any] = Field(default_factory=dict, alias="podSelector")
    ingress: Optional[list[dict[str, Any]]] = None
    egress: Optional[list[dict[str, Any]]] = None
    policy_types: Optional[list[Literal["Ingress", "Egress"]]] = Field(None, alias="policyTypes")


class StagedGlobalNetworkPolicy(Resource):
    KIND: ClassVar[str] = "StagedGlobalNetworkPolicy"
    NAMESPACED: ClassVar[bool] = False

    spec: StagedGlobalNetworkPolicySpec = Field(default_factory=StagedGlobalNetworkPolicySpec)


class StagedNetworkPolicy(Resource):
    KIND: ClassVar[str] = "StagedNetworkPolicy"
    NAMESPACED: ClassVar[bool] = True

    spec: StagedNetworkPolicySpec = Field(default_factory=StagedNetworkPolicySpec)


class StagedKubernetesNetworkPolicy(Resource):
    KIND: ClassVar[str] = "StagedKubernetesNetworkPolicy"
    NAMESPACED: ClassVar[bool] = True

    spec: StagedKubernetesNetworkPolicySpec = Field(default_factory=StagedKubernetesNetworkPolicySpec)
