"""The devcluster: a real one-node Kubernetes cluster on this machine, for tests and ``./dev run``.

Development tooling, not part of the ``studio_spawner`` product. See docs/devcluster.md.
"""

from .cluster import DevCluster
from .controlplane import DevClusterError, find_binaries
from .registry import ECR_HOSTS, PRIVATE_HOST, PRIVATE_USERS, PUBLIC_HOST

__all__ = ["DevCluster", "DevClusterError", "find_binaries", "ECR_HOSTS", "PRIVATE_HOST",
           "PRIVATE_USERS", "PUBLIC_HOST"]
