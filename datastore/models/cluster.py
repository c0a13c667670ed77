"""ClusterInformation (singleton ``default``): cluster GUID, type, Calico
version and the ``datastoreReady`` flag the CNI plugin checks before ADD."""
from __future__ import annotations

from typing import ClassVar, Optional

from pydantic import Field

from datastore.models.common import CalicoModel, Resource


class ClusterInformationSpec(CalicoModel):
    cluster_guid: Optional[str] = Field(None, alias="clusterGUID")
    cluster_type: Optional[str] = Field(None, alias="clusterType")
    calico_version: Optional[str] = Field(None, alias="calicoVersion")
    datastore_ready: Optional[bool] = Field(None, alias="datastoreReady")
    variant: Optional[str] = None


class ClusterInformation(Resource):
    KIND: ClassVar[str] = "ClusterInformation"
    NAMESPACED: ClassVar[bool] = False

    spec: ClusterInformationSpec = Field(default_factory=ClusterInformationSpec)
