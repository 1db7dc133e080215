"""Fixtures for tests against the devcluster (a real control plane and node; docs/devcluster.md).

Register them in ``conftest.py``::

    from tests.devcluster_fixtures import devcluster, kube_api  # noqa: F401

``devcluster`` (session): a started :class:`DevCluster` (kube-apiserver, etcd, scheduler,
controller-manager, registries, images, kubelet + containerd + runc), built first if needed. When
it cannot start, dependent tests are skipped, or fail when the ``CI`` environment variable is set.
``kube_api`` (function, async): a ``kubernetes_asyncio`` ``ApiClient`` logged in as admin.
``kube_api_client(kubeconfig)``: the same for any kubeconfig (e.g. ``issue_kubeconfig``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config

from devcluster import DevCluster


async def kube_api_client(kubeconfig: str | os.PathLike[str]) -> client.ApiClient:
    """A ``kubernetes_asyncio`` ApiClient for ``kubeconfig``; close it (or ``async with``)."""
    return await config.new_client_from_config(config_file=str(kubeconfig),
                                               persist_config=False)


def api_client_with_token(cluster: DevCluster, token: str) -> client.ApiClient:
    """An ApiClient authenticating with a bearer token (e.g. a ServiceAccount token)."""
    conf = client.Configuration(host=cluster.server)
    conf.ssl_ca_cert = str(cluster.ca_file)
    conf.api_key = {"BearerToken": token}
    conf.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(conf)


@pytest.fixture(scope="session")
def devcluster(pytestconfig: pytest.Config) -> Iterator[DevCluster]:
    """A running devcluster shared by the whole test session."""
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    # Show build.sh progress live: a cold build takes many minutes.
    show = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    cluster = DevCluster()
    try:
        with show:
            cluster.start()
    except Exception as exc:
        reason = f"devcluster unavailable: {type(exc).__name__}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason=reason)  # in CI the line above fails instead
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest_asyncio.fixture
async def kube_api(devcluster: DevCluster) -> AsyncIterator[client.ApiClient]:
    """An admin ``kubernetes_asyncio`` ApiClient for the devcluster."""
    async with await kube_api_client(Path(devcluster.kubeconfig)) as api:
        yield api
