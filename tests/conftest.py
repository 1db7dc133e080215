"""Shared fixtures. Cluster fixtures live in their own modules and are registered here."""

from __future__ import annotations

import pytest

from studio_spawner.catalog import StudioCatalog

pytest_plugins = [
    "tests.aws_fixtures",
    "tests.connect_fixtures",
    "tests.devcluster_fixtures",
    "tests.studio_fixtures",
]

IMAGE = "quay.io/jupyter/scipy-notebook:2024-07-29"
CATALOG_CONFIG = {
    "templates": [
        {"id": "python", "display_name": "Python", "image": IMAGE, "description": "SciPy stack",
         "resources": ["small", "gpu"], "default_resources": "small"},
        {"id": "rstudio", "display_name": "R", "image": "rocker/rstudio:4.4", "conda": False,
         "default_url": "/rstudio"},
    ],
    "resource_presets": [
        {"id": "small", "display_name": "Small", "cpu_limit": 1, "mem_limit": "2G"},
        {"id": "large", "display_name": "Large", "cpu_limit": 8, "mem_limit": "32G"},
        {"id": "gpu", "display_name": "GPU", "cpu_limit": 4, "mem_limit": "16G", "gpu": 1},
    ],
    "data_repositories": [
        {"name": "genomes", "bucket": "genomes-bucket", "description": "Reference genomes"},
        {"name": "scratch", "bucket": "scratch-bucket", "writable": True,
         "claim": "scratch-ro", "writable_claim": "scratch-rw"},
    ],
    "allowed_registries": ["quay.io/**", "docker.io/**", "*.dkr.ecr.*.amazonaws.com/**",
                           "localhost:5000/**"],
}


@pytest.fixture
def catalog() -> StudioCatalog:
    return StudioCatalog(**CATALOG_CONFIG)
