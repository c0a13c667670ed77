"""The Kubernetes datastore (upstream's "KDD"): Calico state in the Kubernetes API.

``datastore.config.connect`` imports :class:`KubernetesBackend` from here. The
default transport is stdlib HTTP (cheap to import, for the per-pod CNI
processes); the kubernetes Python client is imported only when a kubeconfig
needs it (exec / auth-provider credentials) or ``PYCALICO_K8S_TRANSPORT=kubernetes``.
"""
from __future__ import annotations

from datastore.kubernetes.backend import KubernetesBackend

__all__ = ["KubernetesBackend"]
