"""A local Kubernetes control plane (etcd + kube-apiserver) for tests; see ``cluster.py``."""

from .cluster import DevCluster, DevClusterError, find_binaries

__all__ = ["DevCluster", "DevClusterError", "find_binaries"]
