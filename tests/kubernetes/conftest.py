"""Kubernetes-datastore fixtures (see fixtures.py): a session kube-apiserver,
``kube_backend``, and ``datastore``/``backend`` parametrized over etcd and
the Kubernetes API."""
from tests.kubernetes.fixtures import (  # noqa: F401 - pytest fixtures
    backend,
    datastore,
    kube_apiserver,
    kube_backend,
    private_kube_apiserver_factory,
)
