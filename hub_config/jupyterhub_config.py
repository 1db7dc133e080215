"""An annotated, working JupyterHub configuration for Studio Spawner.

Use it as it is for a trial (``./dev run``), or copy the blocks you need. Every
``c.StudioSpawner.*`` setting is documented in the README's configuration reference, and
``studio-spawner validate|render --config THIS_FILE options.json`` shows what a studio gets.
"""

import os

from studio_spawner.home import configure_studio_home
from studio_spawner.lifespan import lifespan_role, lifespan_service, user_access_role
from studio_spawner.sharing import configure_workspace_sharing

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

# --- The hub ----------------------------------------------------------------------------------
c.JupyterHub.spawner_class = "studio"  # the entry point of studio_spawner.StudioSpawner
c.JupyterHub.allow_named_servers = True  # one user, many studios
c.JupyterHub.named_server_limit_per_user = 10
c.JupyterHub.bind_url = os.environ.get("STUDIO_HUB_URL", "http://127.0.0.1:8000")
# The hub's API must be reachable from the studio pods.
c.JupyterHub.hub_ip = os.environ.get("STUDIO_HUB_IP", "127.0.0.1")

# Trial login: any user name, password "studio", with workspace membership (below). Use your
# real authenticator in production, e.g. with_workspaces(GenericOAuthenticator) (see
# docs/collaboration.md).
c.JupyterHub.authenticator_class = "studio_spawner.auth.WorkspaceDummyAuthenticator"
c.DummyAuthenticator.password = os.environ.get("STUDIO_DEMO_PASSWORD", "studio")
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}

# --- The studio home: /hub/studios, where users land after login (docs/home.md) -----------------
configure_studio_home(c)

# --- The lifespan service stops studios when their time is up. Its policy is the
# c.StudioSpawner.lifespan_* settings below, read from the hub; users extend on the studio home.
c.JupyterHub.services = [lifespan_service(args=["--interval=60"], policy_from_hub=True)]
c.JupyterHub.load_roles = [lifespan_role(), user_access_role()]

# --- Collaboration: workspaces, roles and the private toggle (docs/collaboration.md) ----------
# Everyone may launch in "demo"; log in as ann, ben, cal, eve or pat to try the roles. With an
# identity provider, map its groups with c.WorkspaceAuthenticator.claim_pattern.
c.WorkspaceAuthenticator.workspaces = {
    "demo": {"*": "launch"},
    "genomics": {"ann": "launch", "ben": "connect", "cal": "view", "eve": "admin"},
    "proteomics": {"ann": "launch", "pat": "owner"},
}
# or a YAML file of the same shape, re-read when it changes:
# c.WorkspaceAuthenticator.workspaces_file = "/srv/jupyterhub/workspaces.yaml"
# Membership changes reach running studios within auth_refresh_age (60 s here by default) plus
# c.StudioSpawner.server_auth_cache_seconds (30 s).
# c.StudioSpawner.share_min_role = "connect"  # who may open shared studios (view/connect/launch)
configure_workspace_sharing(c)  # the sharing service, its role and token; studios follow Private

# --- Where studios run ------------------------------------------------------------------------
c.KubeSpawner.namespace = os.environ.get("STUDIO_NAMESPACE", "default")
c.KubeSpawner.start_timeout = 300
c.KubeSpawner.http_timeout = 120
# Zero to JupyterHub's pod security defaults: studios run as uid 1000 with fsGroup 100.
c.KubeSpawner.uid = 1000
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.storage_pvc_ensure = True  # a home volume per studio user (size: disk_gib)
c.KubeSpawner.pvc_name_template = "claim-{user_server}"
c.KubeSpawner.volumes = [
    {"name": "home", "persistentVolumeClaim": {"claimName": "claim-{user_server}"}}
]
c.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]

# --- The catalogue ----------------------------------------------------------------------------
c.StudioSpawner.templates = [
    {
        "id": "python",
        "display_name": "Python (SciPy)",
        "description": "Jupyter SciPy stack with conda",
        "image": "quay.io/jupyter/scipy-notebook:2024-07-29",
        "default_url": "/lab",
        "resources": ["small", "large"],
    },
    {
        "id": "r",
        "display_name": "R",
        "description": "R with the tidyverse",
        "image": "quay.io/jupyter/r-notebook:2024-07-29",
        "conda": True,
    },
    {  # any web tool runs behind the studio-connect proxy (docs/tools.md)
        "id": "vscode",
        "display_name": "VS Code",
        "description": "code-server in the browser",
        "image": "docker.io/codercom/code-server:4.96.4",
        "kind": "tool",
        "command": "code-server --auth none --bind-addr 127.0.0.1:$CONNECT_TOOL_PORT",
    },
]
# The proxy image of web tool studios: build images/connect and push it to your registry.
c.StudioSpawner.connect_image = "registry.example.com/studio-connect:0.1.0"
c.StudioSpawner.resource_presets = [
    {"id": "small", "display_name": "Small", "description": "1 CPU, 2 GB",
     "cpu_limit": 1, "mem_limit": "2G"},
    {"id": "large", "display_name": "Large", "description": "4 CPU, 16 GB",
     "cpu_guarantee": 2, "cpu_limit": 4, "mem_guarantee": "8G", "mem_limit": "16G"},
]
c.StudioSpawner.data_repositories = [
    {"name": "reference", "bucket": "example-reference-data", "region": "eu-west-1",
     "description": "Reference genomes (read-only)"},
    {"name": "scratch", "bucket": "example-scratch", "region": "eu-west-1", "writable": True,
     "description": "Team scratch space"},
]

# --- Policies ---------------------------------------------------------------------------------
c.StudioSpawner.allow_custom_images = True
c.StudioSpawner.allowed_registries = ["quay.io/**", "docker.io/**", "*.dkr.ecr.*.amazonaws.com/**"]
c.StudioSpawner.allow_conda_with_custom_image = False
c.StudioSpawner.conda_channels = ["conda-forge", "bioconda"]
# Conda (docs/conda.md): the hub solves each environment.yml before the pod (a missing package
# or a conflict shows next to the field) and the studio installs the lock; pip URLs/VCS are off.
c.StudioSpawner.conda_solve = True
c.StudioSpawner.conda_pip_direct_urls = False
# A package cache shared by studios (ReadWriteMany; users sharing it must trust each other):
# c.StudioSpawner.conda_package_cache_volume = {
#     "persistentVolumeClaim": {"claimName": "studio-conda-pkgs"}}
c.StudioSpawner.lifespan_default_hours = 8
c.StudioSpawner.lifespan_min_hours = 1
c.StudioSpawner.lifespan_max_hours = 120
c.StudioSpawner.allow_keep_running = False
c.StudioSpawner.private_default = False
c.StudioSpawner.protected_env_names = ["AWS_*"]

# --- AWS: S3 data repositories and private images on Amazon ECR (docs/data.md, docs/images.md)
# The hub checks chosen buckets (HeadBucket) and ECR images (DescribeImages) with its own AWS
# credentials before a studio starts, and gives ECR images a pull Secret.
c.StudioSpawner.data_provisioning = "claims"  # or "mountpoint" + helm-values/rbac-s3-mountpoint
c.StudioSpawner.ecr_allowed_regions = ["eu-west-1"]
c.StudioSpawner.aws_region = os.environ.get("AWS_REGION", "")
c.StudioSpawner.disk_default_gib = 10
c.StudioSpawner.disk_max_gib = 100

# ./dev run on the devcluster (devcluster/demo.py sets these variables): the devcluster's
# notebook image from its local registry, with its conda channel served on the pod bridge, and
# the demo buckets' data as admin-made claims (local volumes stand in for Mountpoint for S3).
if os.environ.get("STUDIO_DEMO_IMAGE"):
    c.StudioSpawner.templates = [
        {"id": "notebook", "display_name": "JupyterLab (devcluster)",
         "image": os.environ["STUDIO_DEMO_IMAGE"], "default_url": "/lab",
         "description": "JupyterLab with two image conda envs (python-data, tools)"},
        {"id": "web-tool", "display_name": "Web server (any tool)", "kind": "tool",
         "image": os.environ["STUDIO_DEMO_TOOL_IMAGE"],
         "description": "No Jupyter: python3 -m http.server on $CONNECT_TOOL_PORT"},
    ]
    c.StudioSpawner.connect_image = os.environ["STUDIO_DEMO_CONNECT_IMAGE"]
    c.StudioSpawner.allow_custom_tools = True
    c.StudioSpawner.resource_presets = []
    c.StudioSpawner.allowed_registries = ["registry.studio.test/**", "private.studio.test/**"]
    c.StudioSpawner.conda_channels = [os.environ["STUDIO_DEMO_CHANNEL"]]
    c.StudioSpawner.conda_channel_alias = os.environ["STUDIO_DEMO_CHANNEL_ALIAS"]
    # The form's examples name what this demo offers: the channel's packages, its registry.
    c.StudioSpawner.environment_yml_example = (
        f"channels:\n  - {os.environ['STUDIO_DEMO_CHANNEL']}\ndependencies:\n  - python\n"
        "  - studio-hello\n")
    c.StudioSpawner.custom_image_example = os.environ["STUDIO_DEMO_IMAGE"]
    c.StudioSpawner.data_repositories = []
    if os.environ.get("STUDIO_DEMO_S3_ENDPOINT"):  # demo buckets on a local S3 server (moto)
        c.StudioSpawner.aws_endpoint_url = os.environ["STUDIO_DEMO_S3_ENDPOINT"]
        c.StudioSpawner.data_repositories = [
            {"name": "reference", "bucket": "demo-reference", "region": "eu-west-1",
             "description": "Demo reference data"},
            {"name": "scratch", "bucket": "demo-scratch", "region": "eu-west-1",
             "writable": True, "description": "Demo scratch space"},
        ]
