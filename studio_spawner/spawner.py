"""StudioSpawner: KubeSpawner plus the studio form, options, files Secret and fail-fast start.

Glue only: parsing lives in options.py, the form in form/, pod pieces in pod.py, status
reading in pod_status.py.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from kubernetes_asyncio.client import V1Pod
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from tornado import web
from traitlets import (
    Bool,
    Callable,
    Enum,
    Float,
    Integer,
    List,
    TraitError,
    Unicode,
    default,
    validate,
)

from . import pod as pod_builder
from .aws import AwsAccess
from .catalog import StudioCatalog
from .conda_build import CondaBuild, CondaBuildError
from .conda_check import check_environment_yml
from .data import (
    DataUnavailable,
    DataVolume,
    MountpointSettings,
    check_buckets,
    ensure_volumes,
    plan_volumes,
)
from .errors import FieldError, OptionsError
from .form import form_values, render_form, submitted_values
from .images import ImageUnavailable, check_image, ecr_registry, pull_secret, registry_credentials
from .kube_calls import with_retries
from .options import StudioOptions, form_to_raw, parse_options
from .pod_status import describe_event, pod_failure, running_step, with_pull_events
from .sharing import WorkspaceSharing
from .startup import program_files
from .stored_options import StoredOptionsGuard, install
from .studio_status import FAILURE_KEY, FIELD_LABELS, SAVED_KEY, START_FAILED, LastFailure
from .validators import text_error

install()  # refuse spawn bodies before JupyterHub stores them (see stored_options.py)


def _applied_at_start(spawner: Any, user_options: dict[str, Any]) -> None:
    """JupyterHub's apply_user_options hook: nothing to do, the studio's start validates and
    applies every option (parse_options). Setting it tells JupyterHub they are handled."""

MOUNT_OPTION = re.compile(r"[a-z][a-z0-9-]*(?:[ =][A-Za-z0-9_./:=-]+)?")
OUR_MOUNT_OPTIONS = ("read-only", "allow-delete", "allow-overwrite", "prefix", "region",
                     "uid", "gid", "allow-other")
FORGET_DELAY_SECONDS = 1.0  # after the hub has finished handling a refused start


class StudioStartError(web.HTTPError):
    """The studio's pod cannot become ready; the message says why (also in API errors)."""

    def __init__(self, reason: str, step: str | None = None):
        super().__init__(500, "%s", f"{START_FAILED}{reason}")
        self.jupyterhub_message = self.log_message % self.args
        self.step = step  # the start-up step (init container) that failed, if any

    def __str__(self) -> str:
        return self.jupyterhub_message


class _JSONResponse:
    """Adapter so ApiClient.deserialize can turn a dict into a V1 model."""

    def __init__(self, data: dict[str, Any]):
        self.data = json.dumps(data)


class StudioSpawner(StoredOptionsGuard, WorkspaceSharing, CondaBuild, KubeSpawner, StudioCatalog):
    """Spawn data-science studios chosen on the studio form (see README for every setting)."""

    termination_grace_period_seconds = Integer(
        30,
        min=0,
        config=True,
        help="""Seconds a studio gets to shut down after SIGTERM before it is killed (the pod's
        terminationGracePeriodSeconds, and KubeSpawner.delete_grace_period unless set).""",
    )
    startup_image_env_dirs = List(
        Unicode(),
        ["/opt/conda/envs"],
        config=True,
        help="Directories in the image whose conda envs are synced into $HOME/.local/envs.",
    )
    startup_installer = Unicode(
        "",
        config=True,
        help="Command that builds the user's environment.yml ('' = detect mamba/micromamba/conda).",
    )
    init_timeout_seconds = Integer(
        600, min=1, config=True, help="Time limit of the user's init script, in seconds."
    )
    environment_yml_check_seconds = Float(
        10,
        min=0.5,
        config=True,
        help="""Time limit of the environment.yml check, which runs in a child process so
        that no file can stall the hub; a file that takes longer is refused.""",
    )
    image_pull_retry_seconds = Float(
        120,
        min=0,
        config=True,
        help="""How long a start waits while the image pull fails in a way that may heal (a
        registry's 429, a timeout; the kubelet retries) before it fails. A pull that cannot
        succeed (not found, unauthorized) fails the start at once.""",
    )
    user_env_name = Unicode(
        "studio", config=True, help="Name of the env built from the user's environment.yml."
    )
    workspaces_hook = Callable(
        None,
        allow_none=True,
        config=True,
        help="""Callable(spawner) -> list of workspace names the user may launch studios in.
        None: with workspace_sharing, the workspaces where the user's groups give the launch
        role or above; without it, studios belong to no workspace.""",
    )

    aws_region = Unicode(
        "",
        config=True,
        help="""AWS region for S3 and ECR calls when a repository or image does not say
        ('' = boto3's default: AWS_REGION, the hub's config or instance metadata).""",
    )
    aws_endpoint_url = Unicode(
        "",
        config=True,
        help="""Endpoint for the hub's S3 and ECR calls ('' = AWS). For S3/ECR-compatible
        services and tests; the hub's credentials come from boto3's usual chain.""",
    )
    data_provisioning = Enum(
        ["claims", "mountpoint"],
        "claims",
        config=True,
        help="""How data repositories get their volumes. 'claims': mount admin-provisioned
        PersistentVolumeClaims by name (claim / writable_claim, default
        studio-data-<name>-ro|rw); no extra permissions. 'mountpoint': create a PersistentVolume
        for the Mountpoint for Amazon S3 CSI driver and its claim; needs the ClusterRole in
        helm-values/rbac-s3-mountpoint.yaml.""",
    )
    data_mount_options = List(
        Unicode(),
        config=True,
        help="""Extra Mountpoint mount options for provisioned volumes, e.g.
        'cache /tmp/mountpoint-cache' or 'max-threads 16'. The mode, prefix, region, uid, gid
        and allow-other options are set by the spawner.""",
    )
    check_data_buckets = Bool(
        True,
        config=True,
        help="Before a studio starts, check each chosen bucket exists and is reachable.",
    )
    check_ecr_images = Bool(
        True,
        config=True,
        help="Before a studio starts, check its Amazon ECR repository and tag or digest exist.",
    )
    connect_image = Unicode(
        "",
        config=True,
        help="""Image of the studio-connect proxy that runs beside every web tool studio
        (images/connect/README.md), e.g. registry.example.org/studio-connect:<tag>. Required
        for tool templates and custom tools; '' refuses to start them, saying so.""",
    )
    connect_tool_port = Integer(
        8080,
        min=1,
        max=65535,
        config=True,
        help="""Port a web tool listens on, given to it as CONNECT_TOOL_PORT (a template's
        port overrides it). Must differ from the server port the hub uses (KubeSpawner.port).""",
    )
    connect_tool_wait_seconds = Integer(
        300,
        min=1,
        config=True,
        help="""How long a web tool may take to listen on its port; then the studio-connect
        proxy stops and the spawn fails with the tool's last output.""",
    )
    connect_activity_seconds = Integer(
        300,
        min=0,
        config=True,
        help="""How often a web tool studio reports its last activity to the hub (as
        jupyterhub-singleuser does; 0: never). The lifespan service and idle cullers read it.""",
    )
    ecr_pull_secrets = Bool(
        True,
        config=True,
        help="""Give studios on Amazon ECR images a pull Secret made from a 12-hour ECR token
        (not needed when the nodes' IAM role may pull from ECR).""",
    )

    # Form state of a failed submit, kept per user so the re-rendered form shows the errors
    # next to the fields and everything the user typed (the hub re-renders with a new call).
    _failed_forms: ClassVar[dict[str, tuple[dict[str, Any], dict[str, str]]]] = {}
    studio_options: StudioOptions | None = None
    _studio_disk_gib: int | None = None
    #: Why the last start failed (kept in the state, so it outlives the pod and the spawner).
    last_failure: LastFailure | None = None
    #: The studio was saved (added from the studio home, or started): a refused start keeps it.
    studio_saved: bool = False
    _parsed: tuple[Any, StudioOptions] | None = None
    _configured: dict[str, Any] | None = None
    _fail_fast = False  # True from the start's validation until the pod is ready
    _creating_pod = False  # KubeSpawner's pod creation (and its stop of a leftover pod)
    _pull_error_since: float | None = None

    @default("options_form")
    def _default_options_form(self) -> Any:
        return StudioSpawner.render_options_form

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return self.studio_options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return _applied_at_start

    @default("delete_grace_period")
    def _default_delete_grace_period(self) -> int:
        # KubeSpawner deletes pods with a 1 s grace period, which overrides the pod's
        # terminationGracePeriodSeconds: keep the studio's (SIGTERM, then SIGKILL after it).
        return self.termination_grace_period_seconds

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        return ["jupyterhub-singleuser"]

    @validate("cmd")
    def _require_cmd(self, proposal: dict) -> list[str]:
        if not proposal["value"]:
            raise ValueError(
                "StudioSpawner.cmd must name the server command (e.g. jupyterhub-singleuser): "
                "the start-up program runs first and then executes it"
            )
        return proposal["value"]

    @validate("data_mount_options")
    def _check_mount_options(self, proposal: dict) -> list[str]:
        for index, option in enumerate(proposal["value"]):
            key = re.split("[ =]", option, maxsplit=1)[0]
            if not MOUNT_OPTION.fullmatch(option) or key in OUR_MOUNT_OPTIONS:
                raise TraitError(
                    f"StudioSpawner.data_mount_options[{index}]: '{option}' is not allowed; "
                    "use 'name' or 'name value' and leave the mode, prefix, region, uid, gid "
                    "and allow-other to the spawner"
                )
        return proposal["value"]

    # --- the form and the options ----------------------------------------------------------

    def workspaces(self) -> list[str]:
        if self.workspaces_hook:
            return list(self.workspaces_hook(self))
        return self.launch_workspaces()  # collaboration (sharing.py): from the user's groups

    def render_options_form(self) -> str:
        """Render the form, pre-filled from the last failed submit or the saved options."""
        failed = self._failed_forms.pop(self._form_key, None)
        values, errors = failed or (form_values(self, self.saved_options_for_form(), self.name), {})
        return render_form(
            self,
            values,
            errors=errors,
            workspaces=self.workspaces(),
            existing_disk_gib=self._studio_disk_gib,
        )

    @property
    def _form_key(self) -> str:
        # Per user, not per server: JupyterHub re-renders a failed named-server submit with
        # the default server's spawner (user.spawner); the same request consumes the entry.
        return self.user.name

    def _parse_inputs(self, raw: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """parse_options' arguments: the raw options with the server's defaults filled in."""
        if not isinstance(raw, Mapping):
            raise OptionsError([FieldError("options", "must be a JSON object")])
        raw = dict(raw)
        if "name" not in raw:
            raw["name"] = self.name or "studio"
        if "template" not in raw and "image" not in raw:
            raw["template"] = next(iter(self.template_entries()), None)
        return {
            "raw": raw,
            "catalog": self,
            "workspaces": self.workspaces(),  # reads the hub's database: on the event loop
            "workspace_required": self.workspace_sharing,
            "existing_disk_gib": self._studio_disk_gib,
            **kwargs,
        }

    def parse(self, raw: Mapping[str, Any], **kwargs: Any) -> StudioOptions:
        """The one validator for both the form and the REST API."""
        return parse_options(**self._parse_inputs(raw, kwargs))

    async def parse_off_loop(self, raw: Mapping[str, Any], **kwargs: Any) -> StudioOptions:
        """`parse` off the event loop: the environment.yml in a child process with a time
        limit (conda_check.py), the rest in a worker thread. The same inputs are parsed once per
        start (the form's check and the start's)."""
        inputs = self._parse_inputs(raw, kwargs)
        memo = {k: v for k, v in inputs.items() if k != "catalog"}
        if self._parsed is not None and self._parsed[0] == memo:
            return self._parsed[1]
        text = inputs["raw"].get("environment_yml")
        if (isinstance(text, str) and text.strip() and not text_error(text, "\r\n\t")
                and len(text.encode()) <= self.environment_yml_max_bytes):  # else: field errors
            inputs["conda_problems"] = await check_environment_yml(
                text.replace("\r\n", "\n"), self.conda_policy(),
                self.environment_yml_max_bytes, self.environment_yml_check_seconds)
        options = await asyncio.to_thread(parse_options, **inputs)
        self._parsed = (copy.deepcopy(memo), options)
        return options

    async def studio_options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        raw, problems = form_to_raw(formdata)
        try:
            options = await self.parse_off_loop(raw, form_errors=problems)
        except OptionsError as error:
            self._failed_forms[self._form_key] = (submitted_values(formdata), error.by_field)
            if not self.orm_spawner.user_options:  # nothing saved before this form
                self.forget_if_unsaved()
            raise
        return options.to_user_options()

    async def run_options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        """Parse the form, then solve its environment.yml: a missing package or a conflict is
        shown next to the field, and the lock is kept for the start that follows."""
        options = super().run_options_from_form(formdata)
        if inspect.isawaitable(options):  # our options_from_form parses off the event loop
            options = await options
        try:
            await self.prepare_conda(options.get("environment_yml") or "")
        except CondaBuildError as error:
            failure = OptionsError([FieldError("environment_yml", str(error))])
            self._failed_forms[self._form_key] = (submitted_values(formdata), failure.by_field)
            raise failure from error
        return options

    def start(self) -> Any:
        """Refuse invalid options with HTTP 400 before anything is stored or created, then start.

        A refused first start leaves no empty studio behind; any failure is recorded in
        ``last_failure`` (and so in the state) for the studio home.
        """
        self.last_failure = None
        return self._validate_then_start()

    async def _validate_then_start(self) -> Any:
        try:
            self.studio_options = await self.parse_off_loop(self.raw_options())
        except OptionsError as error:
            self.last_failure = LastFailure.now(error.jupyterhub_message)
            self.refuse_options()
            if self._options_came_with_request():
                self.forget_if_unsaved()
            raise web.HTTPError(400, "%s", error.jupyterhub_message) from error
        self.studio_saved = True
        self.save_options(self.studio_options.to_user_options())
        return await self._record_failure(super().start())

    async def _record_failure(self, starting: Any) -> Any:
        try:
            return await starting
        except asyncio.CancelledError:  # the hub's start_timeout
            self.last_failure = LastFailure.now(
                f"The studio did not start in {self.start_timeout} seconds")
            raise
        except Exception as error:
            message = getattr(error, "jupyterhub_message", None) or str(error)
            self.last_failure = LastFailure.now(message, getattr(error, "step", None))
            raise

    def _options_came_with_request(self) -> bool:
        """The refused options are the request's body (not ones saved before, e.g. by
        JupyterHub 6's PUT, which a start without a body uses)."""
        handler = getattr(self, "handler", None)
        body = (getattr(getattr(handler, "request", None), "body", b"") or b"").strip()
        return body not in (b"", b"{}", b"null")

    def forget_if_unsaved(self) -> None:
        """Delete this named server soon, unless it was ever saved (a refused first try).

        JupyterHub creates the server's database row before the form is parsed and before
        ``start()``; without this, every rejected first start would leave an empty studio.
        """
        if not self.studio_saved and self.name:
            asyncio.get_running_loop().call_later(FORGET_DELAY_SECONDS, self._forget)

    def _forget(self) -> None:
        from .home.servers import forget_server  # the home owns server removal

        if not (self.studio_saved or self.active or self.pending):
            forget_server(self.user, self.name, self.orm_spawner)

    async def load_user_options(self) -> None:
        """Validate the stored/API options, apply them, and prepare their cloud resources.

        KubeSpawner's start calls this first: from here until the pod is ready, a pod that can
        never become ready fails the start at once (see is_pod_running)."""
        self._fail_fast, self._pull_error_since = True, None
        self.apply_studio_options(await self.parse_off_loop(self.raw_options()))
        await self.prepare_studio()

    #: Traits apply_studio_options sets; each start begins from their configured values.
    STUDIO_SET_TRAITS = ("image", "default_url", "cpu_guarantee", "cpu_limit", "mem_guarantee",
                         "mem_limit", "extra_resource_limits", "storage_capacity")

    def apply_studio_options(self, options: StudioOptions) -> None:
        """Apply the non-templated settings the options choose (no I/O).

        Settings come from the admin's configuration plus these options only: nothing from a
        previous start of the same server (another preset's GPU, another template's URL) stays.
        """
        if self._configured is None:
            self._configured = {n: copy.deepcopy(getattr(self, n)) for n in self.STUDIO_SET_TRAITS}
        for name, value in self._configured.items():
            setattr(self, name, copy.deepcopy(value))
        self.studio_options = options
        self.image = options.image
        template = self.template_entries().get(options.template or "")
        if template and not options.is_tool:
            self.default_url = template.default_url
        preset = self.preset_entries().get(options.resources or "")
        if preset:
            self.cpu_guarantee = preset.cpu_guarantee
            self.cpu_limit = preset.cpu_limit
            self.mem_guarantee = preset.mem_guarantee
            self.mem_limit = preset.mem_limit
            if preset.gpu:
                self.extra_resource_limits = {
                    **self.extra_resource_limits, "nvidia.com/gpu": str(preset.gpu)
                }
        self.storage_capacity = f"{options.disk_gib}Gi"

    # --- the pod ---------------------------------------------------------------------------

    @property
    def files_secret_name(self) -> str:
        return f"{self.pod_name}-files"

    @property
    def _pull_secret(self) -> str:
        return f"{self.pod_name}-pull"

    @property
    def pull_secret_name(self) -> str | None:
        """The ECR pull Secret's name, when the studio's image needs one."""
        assert self.studio_options is not None
        if self.ecr_pull_secrets and ecr_registry(self.studio_options.image):
            return self._pull_secret
        return None

    @property
    def aws(self) -> AwsAccess:
        return AwsAccess(self.aws_region, self.aws_endpoint_url)

    def data_volumes(self) -> list[DataVolume]:
        """The studio's data repositories as volumes (pure: names only, nothing created)."""
        assert self.studio_options is not None
        mountpoint = None
        if self.data_provisioning == "mountpoint":
            mountpoint = MountpointSettings(
                namespace=self.namespace,
                uid=self.uid if isinstance(self.uid, int) else None,
                gid=self.fs_gid if isinstance(self.fs_gid, int) else None,
                extra_options=tuple(self.data_mount_options),
            )
        return plan_volumes(self.studio_options, self.repository_entries(), mountpoint)

    async def prepare_studio(self) -> None:
        """Check the buckets and the ECR image, then create volumes and the pull Secret.

        Runs before the pod exists; a problem fails the spawn at once with the reason.
        """
        assert self.studio_options is not None
        self.tool_pod()  # a web tool that cannot run here fails before anything is created
        try:
            planned = self.data_volumes()
            if planned and self.check_data_buckets:
                await check_buckets(self.aws, planned)
            await ensure_volumes(self.api, planned, self._kube)
            ecr = ecr_registry(self.studio_options.image)
            if ecr and self.check_ecr_images:
                await check_image(self.aws, ecr)
            if ecr and self.pull_secret_name:
                registry, auth = await registry_credentials(self.aws, ecr)
                labels = self._build_common_labels({})
                await self._replace_secret(pull_secret(self.pull_secret_name, registry, auth,
                                                       labels=labels))
            await self.prepare_conda(self.studio_options.environment_yml)
        except DataUnavailable as error:  # its message starts with the field, data[i]
            raise StudioStartError(str(error)) from error
        except CondaBuildError as error:
            raise StudioStartError(f"{FIELD_LABELS['environment_yml']}: {error}") from error
        except ImageUnavailable as error:
            field = "template" if self.studio_options.template else "image"
            raise StudioStartError(f"{field}: {error}") from error

    def tool_pod(self) -> pod_builder.ToolPod | None:
        """How the studio's web tool runs, or None for a Jupyter studio."""
        assert self.studio_options is not None
        if not self.studio_options.is_tool:
            return None
        field = "template" if self.studio_options.template else "kind"
        if not self.connect_image:
            raise StudioStartError(f"{field}: web tool studios are not set up on this hub "
                                   "(the administrator has to set StudioSpawner.connect_image)")
        if self.internal_ssl:
            raise StudioStartError(f"{field}: web tool studios cannot start on this hub: it uses "
                                   "JupyterHub.internal_ssl, and studio-connect serves plain HTTP "
                                   "(the administrator has to turn internal_ssl off)")
        template = self.template_entries().get(self.studio_options.template or "")
        tool_port = (template and template.port) or self.connect_tool_port
        if tool_port == self.port:
            raise StudioStartError(f"{field}: the tool's port {tool_port} is the server port; "
                                   "the administrator has to choose another tool port")
        command = template.tool_command if template else None
        cache = self.server_auth_cache_seconds
        return pod_builder.ToolPod(
            connect_image=self.connect_image,
            server_port=self.port,
            tool_port=tool_port,
            command=tuple(command) if command else None,
            base_path=template.base_path if template else "strip",
            wait_seconds=self.connect_tool_wait_seconds,
            activity_seconds=self.connect_activity_seconds,
            auth_cache_seconds=cache if self.workspace_sharing and cache is not None else 300,
        )

    def startup_settings(self) -> pod_builder.StartupSettings:
        return pod_builder.StartupSettings(
            image_env_dirs=tuple(self.startup_image_env_dirs),
            installer=self.startup_installer,
            init_timeout_seconds=self.init_timeout_seconds,
            user_env_name=self.user_env_name,
            conda_env=tuple(self.conda_pod_env().items()),
            package_cache=self.conda_cache_volume(),
        )

    async def get_pod_manifest(self) -> V1Pod:
        pod = await super().get_pod_manifest()
        assert self.studio_options is not None, "load_user_options runs before the pod is built"
        client = self.api.api_client
        studio_pod = pod_builder.apply_studio(
            client.sanitize_for_serialization(pod),
            self.studio_options,
            self.data_volumes(),
            files_secret=self.files_secret_name,
            pull_secret=self.pull_secret_name,
            startup=self.startup_settings(),
            grace_seconds=self.termination_grace_period_seconds,
            tool=self.tool_pod(),
            home_claim=self.pvc_name,
        )
        return client.deserialize(_JSONResponse(studio_pod), "V1Pod")

    def files_secret_manifest(self, owner: dict[str, Any] | None) -> dict[str, Any]:
        assert self.studio_options is not None
        return pod_builder.files_secret(
            self.files_secret_name,
            self.studio_options,
            program_files(),
            labels=self._build_common_labels({}),
            owner=owner,
            conda=self.conda_files(self.studio_options.environment_yml),
        )

    @default("after_pod_created_hook")
    def _default_after_pod_created_hook(self) -> Any:
        return StudioSpawner.create_files_secret

    @validate("after_pod_created_hook")
    def _chain_after_pod_created_hook(self, proposal: dict) -> Any:
        """An admin's hook runs after ours, so the files Secret always exists."""
        hook = proposal["value"]
        if hook is None or hook is StudioSpawner.create_files_secret:
            return StudioSpawner.create_files_secret

        async def chained(spawner: StudioSpawner, pod: dict[str, Any]) -> None:
            await spawner.create_files_secret(pod)
            result = hook(spawner, pod)
            if asyncio.iscoroutine(result):
                await result

        return chained

    async def create_files_secret(self, pod: dict[str, Any]) -> None:
        """Create the files Secret, owned by the pod so Kubernetes deletes it with the pod."""
        owner = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
            "blockOwnerDeletion": True,
            "controller": False,
        }
        await self._replace_secret(self.files_secret_manifest(owner))

    async def _kube(self, call: Any, what: str) -> Any:
        """An API call with KubeSpawner's timeouts and retries (see kube_calls.py)."""
        return await with_retries(call, what, request_timeout=self.k8s_api_request_timeout,
                                  retry_timeout=self.k8s_api_request_retry_timeout)

    async def _replace_secret(self, body: dict[str, Any]) -> None:
        """Create a Secret, deleting a leftover of the same name first (there is no patch)."""
        name = body["metadata"]["name"]
        await self._delete_secret(name)

        async def create() -> None:
            try:
                await self.api.create_namespaced_secret(self.namespace, body)
            except ApiException as error:
                if error.status != 409:  # 409: a retry after a lost answer found it made
                    raise

        await self._kube(create, f"Creating the Secret {name}")

    async def _delete_secret(self, name: str) -> None:
        async def delete() -> None:
            try:
                await self.api.delete_namespaced_secret(name, self.namespace)
            except ApiException as error:
                if error.status != 404:
                    raise

        await self._kube(delete, f"Deleting the Secret {name}")

    async def stop(self, now: bool = False) -> None:
        """Stop the pod, then delete its files Secret and the pull Secret made before it.

        KubeSpawner also stops a leftover pod of the same name when it finds one (HTTP 409)
        while creating the pod: that start goes on, and keeps the pull Secret it just made.
        """
        await super().stop(now=now)
        await self._delete_secret(self.files_secret_name)
        # The pull Secret exists before the pod (a kubelet pulls without a missing secret),
        # so it has no owner reference: delete it by its name.
        if not self._creating_pod:
            await self._delete_secret(self._pull_secret)

    async def _make_create_pod_request(self, pod: V1Pod, request_timeout: float) -> bool:
        self._creating_pod = True
        try:
            return await super()._make_create_pod_request(pod, request_timeout)
        finally:
            self._creating_pod = False

    # --- start-up feedback -----------------------------------------------------------------

    def is_pod_running(self, pod: dict[str, Any] | None) -> bool:
        """Ready, or (while a start is in progress) raise at once with the reason when the pod
        can never become ready. ``poll()`` calls this too: a running studio whose container
        restarted once keeps running."""
        if self._fail_fast:
            failure = pod_failure(pod)
            if failure and failure.transient:
                failure = with_pull_events(failure, self.events if self.events_enabled else [])
            if failure and failure.transient and self._still_retrying_pull():
                return False
            if failure:
                self._fail_fast = False
                raise StudioStartError(failure.message, failure.container)
        running = super().is_pod_running(pod)
        if running:
            self._fail_fast = False
        return running

    def _still_retrying_pull(self) -> bool:
        """A transient pull error: the kubelet retries it; we wait image_pull_retry_seconds
        from its first sighting before the start fails."""
        now = time.monotonic()
        if self._pull_error_since is None:
            self._pull_error_since = now
        return now - self._pull_error_since < self.image_pull_retry_seconds

    def _reflected_pod(self) -> dict[str, Any] | None:
        reflector = getattr(self, "pod_reflector", None)
        return reflector.pods.get(f"{self.namespace}/{self.pod_name}") if reflector else None

    def running_step(self) -> str | None:
        """The start-up step running in the studio's pod now (from the pod reflector)."""
        return running_step(self._reflected_pod())

    def failure_now(self) -> LastFailure | None:
        """Why the pod cannot start, as soon as the pod shows it (before the start fails)."""
        failure = pod_failure(self._reflected_pod())
        return LastFailure.now(START_FAILED + failure.message, failure.container) if failure \
            else None

    async def progress(self):  # type: ignore[override]
        try:
            tool = self.tool_pod() if self.studio_options else None
        except StudioStartError:  # the spawn fails with this reason; progress shows the rest
            tool = None
        async for event in super().progress():
            message = describe_event(event, tool.tool_port if tool else None)
            yield {**event, "message": message} if message else event

    # --- state -----------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self._pvc_exists and self.studio_options:
            self._studio_disk_gib = self._studio_disk_gib or self.studio_options.disk_gib
        if self._studio_disk_gib:
            state["studio_disk_gib"] = self._studio_disk_gib
        if self.last_failure:
            state[FAILURE_KEY] = self.last_failure.to_state()
        if self.studio_saved:
            state[SAVED_KEY] = True
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._studio_disk_gib = state.get("studio_disk_gib")
        self.last_failure = LastFailure.from_state(state)
        self.studio_saved = bool(state.get(SAVED_KEY))

    def clear_state(self) -> None:
        super().clear_state()
        self.studio_options = None
