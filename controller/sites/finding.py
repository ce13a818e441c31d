"""Find every ModelKit reference in a Kubernetes object. Pure.

``find(obj, settings)`` looks at an object as it arrives in an AdmissionReview (plain
dicts and lists) and returns :class:`Findings`: the :class:`Site` of every reference
(an RFC 6901 JSON pointer to the string, which grammar it is written in, how to read it)
and every :class:`Unresolvable` place that holds a reference kitpin cannot see.
:func:`controller.sites.pointers.apply` writes pinned strings at those pointers and
:func:`~controller.sites.pointers.json_patch` turns them into the webhook's JSON patch.
Nothing here parses references (that is :mod:`controller.refs`), does I/O, or knows
about kopf.

Paths visited
=============
This list is the user documentation of what kitpin pins. Anything not listed is not read.
``<pod>`` is the pod spec of the object's kind, ``[*]`` means every item of a list.

Pod specs of the built-in kinds (``SitesSettings.pod_kinds``; any version of the API
group; the custom resources below add theirs with ``podSpecs``)::

    Pod                    v1         /spec
    PodTemplate            v1         /template/spec
    ReplicationController  v1         /spec/template/spec
    Deployment             apps       /spec/template/spec
    StatefulSet            apps       /spec/template/spec
    DaemonSet              apps       /spec/template/spec
    ReplicaSet             apps       /spec/template/spec
    Job                    batch      /spec/template/spec
    CronJob                batch      /spec/jobTemplate/spec/template/spec

In every pod spec, for each container of ``initContainers[*]``, ``containers[*]`` and
``ephemeralContainers[*]``:

``<pod>/<list>[*]/env[*]/value``  (kind ``env``, kit grammar)
    when the entry's ``name`` is one of ``SitesSettings.env_names`` (default
    ``MODELKIT_REF``, the KitOps init container's input). Any image: community charts
    use their own init images. An entry with ``valueFrom`` instead of ``value`` is
    reported as :class:`Unresolvable`. An empty value is not a reference and is skipped.
    A ``kitops-init`` container without such an entry but with ``envFrom`` is reported
    as :class:`Unresolvable` too (its reference comes from a ConfigMap or Secret).

``<pod>/<list>[*]/args[*]`` or ``.../command[*]``  (kind ``kit-cli-args``, kit grammar)
    in containers whose image repository (tag and digest ignored) is one of
    ``SitesSettings.kit_cli_images``: the argument after ``pull`` or ``unpack``. The
    argument vector is ``args`` when ``command`` is unset (the images' entrypoint is
    ``kit``), ``command + args`` when ``command`` runs ``kit``; any other ``command`` is
    not kit and is skipped. Flags are skipped as kit's parser would:
    ``--flag=value``; the flags that take a separate value (``--dir``/``-d``,
    ``--filter``/``-f``, ``--tls-cert``, ``--cert``, ``--key``, ``--concurrency``,
    ``--proxy``, and the global ``--config``, ``--log-level``, ``--progress``); every
    other flag is a switch (``-v``, ``-o``/``--overwrite``, ``-i``, ``--plain-http``,
    ``--tls-verify``, ...); ``--`` ends flags. If the argument is exactly ``$(NAME)``
    (Kubernetes expands it from the container's env), the site is that env entry's
    ``<pod>/<list>[*]/env[*]/value`` instead (unless NAME is one of ``env_names``, which
    is reported once, as ``env``). A ``command`` that is a shell script (``sh -c "kit pull ..."``)
    is reported as :class:`Unresolvable`.

``<pod>/volumes[*]/image/reference``  (kind ``image-volume``, container grammar)
    Kubernetes image volumes. ``expects_modelkit`` is False: any OCI artifact may be
    mounted this way, so kitpin pins it but does not insist on a ModelKit. (The engine warns
    when it is a KitOps-format ModelKit, which the kubelet cannot mount: kitops #784.)

``<pod>/volumes[*]/csi/volumeAttributes/<driver>~1reference``  (kind ``modelpack-csi``,
container grammar) when ``csi.driver`` is one of ``SitesSettings.modelpack_csi_drivers``
    The ModelPack CSI driver reads the attribute ``<service name>/reference`` (default
    ``model.csi.modelpack.org/reference``) and hands it to modctl, which parses it with
    the distribution (container) reference grammar.

KServe ``InferenceService`` (``serving.kserve.io``, any version), for each component
``C`` of ``predictor``, ``transformer``, ``explainer`` (kind ``kserve-storage-uri``, kit
grammar, prefix ``kit://`` or one of ``SitesSettings.uri_prefixes``, the other schemes a
``ClusterStorageContainer`` serves with kit; other schemes such as ``s3://``, ``gs://``,
``hf://``, ``pvc://`` and ``oci://`` modelcars are not ModelKits and are skipped)::

    /spec/C/<F>/storageUri        F = any mapping member of C (model, sklearn, pytorch,
                                  huggingface, art, ...) except workerSpec, labels,
                                  annotations, nodeSelector
    /spec/C/storageUris[*]/uri    (KServe's StorageUri objects: {uri, mountPath})
    /spec/C/<F>/storageUris[*]/uri
    /spec/C/<F>/env[*]/value      framework containers, same rule as ``env`` above
    /spec/C as a pod spec         (C inlines a PodSpec: containers, initContainers,
                                  volumes; every pod-spec rule above applies)
    /spec/predictor/workerSpec    as a pod spec

Custom resources (:class:`~controller.sites.extra.ExtraSite`: the shipped defaults below,
then ``SitesSettings.extra_sites``; one whose API group and kind (and version, when listed)
match): every pod spec its ``podSpecs`` reach, where every pod-spec rule above applies, and
every string its ``paths`` reach that starts with its ``prefix`` (kind ``extra``; a
``kit://`` prefix also takes ``SitesSettings.uri_prefixes``). Path syntax:
:mod:`controller.sites.extra`; ``*`` is every item of a list or value of a mapping. A pod
spec or string reached twice is reported once.

Shipped defaults (:data:`controller.sites.defaults.DEFAULT_SITES`, every version of each API;
``sites.disabledDefaults`` turns one off, a ``sites.extra`` entry of the same group and kind
replaces it). Pod specs unless marked ``kit://`` (a reference string, kit grammar, prefix
``kit://``). Each from the project's Go API types, as ``repository``, API version, file::

    leaderworkersets.leaderworkerset.x-k8s.io   LeaderWorkerSet
        /spec/leaderWorkerTemplate/leaderTemplate/spec
        /spec/leaderWorkerTemplate/workerTemplate/spec
        kubernetes-sigs/lws v1 api/leaderworkerset/v1/leaderworkerset_types.go
    jobsets.jobset.x-k8s.io   JobSet
        /spec/replicatedJobs/*/template/spec/template/spec
        kubernetes-sigs/jobset v1alpha2 api/jobset/v1alpha2/jobset_types.go
    rayclusters.ray.io   RayCluster
        /spec/headGroupSpec/template/spec
        /spec/workerGroupSpecs/*/template/spec
        ray-project/kuberay v1 (v1alpha1 alike) ray-operator/apis/ray/v1/raycluster_types.go
    rayservices.ray.io   RayService
        /spec/rayClusterConfig/headGroupSpec/template/spec
        /spec/rayClusterConfig/workerGroupSpecs/*/template/spec
        ray-project/kuberay v1 ray-operator/apis/ray/v1/rayservice_types.go
    rayjobs.ray.io   RayJob
        /spec/rayClusterSpec/headGroupSpec/template/spec
        /spec/rayClusterSpec/workerGroupSpecs/*/template/spec
        /spec/submitterPodTemplate/spec
        ray-project/kuberay v1 ray-operator/apis/ray/v1/rayjob_types.go
    services.serving.knative.dev   Service
        /spec/template/spec
        knative/serving v1 pkg/apis/serving/v1/service_types.go (RevisionSpec inlines a
        PodSpec: revision_types.go)
    configurations.serving.knative.dev   Configuration
        /spec/template/spec
        knative/serving v1 pkg/apis/serving/v1/configuration_types.go
    revisions.serving.knative.dev   Revision
        /spec
        knative/serving v1 pkg/apis/serving/v1/revision_types.go
    llminferenceservices.serving.kserve.io   LLMInferenceService
        /spec/model/uri                   kit://
        /spec/model/lora/adapters/*/uri   kit://
        /spec/template
        /spec/worker
        /spec/prefill/template
        /spec/prefill/worker
        /spec/router/scheduler/template
        /spec/router/scheduler/tokenizer/template
        kserve/kserve v1alpha2 (v1alpha1 alike)
        pkg/apis/serving/v1alpha2/llm_inference_service_types.go
    pytorchjobs.kubeflow.org   PyTorchJob
        /spec/pytorchReplicaSpecs/*/template/spec
    tfjobs.kubeflow.org   TFJob
        /spec/tfReplicaSpecs/*/template/spec
    mpijobs.kubeflow.org   MPIJob
        /spec/mpiReplicaSpecs/*/template/spec
    xgboostjobs.kubeflow.org   XGBoostJob
        /spec/xgbReplicaSpecs/*/template/spec
    paddlejobs.kubeflow.org   PaddleJob
        /spec/paddleReplicaSpecs/*/template/spec
    jaxjobs.kubeflow.org   JAXJob
        /spec/jaxReplicaSpecs/*/template/spec
        kubeflow/training-operator v1 pkg/apis/kubeflow.org/v1/{pytorch,tensorflow,mpi,
        xgboost,paddlepaddle,jax}_types.go (common_types.go: ReplicaSpec.template), the
        v1 tree as of v1.9 (removed upstream by #2389); MPIJob v2beta1 alike:
        kubeflow/mpi-operator pkg/apis/kubeflow/v2beta1/types.go
    trainjobs.trainer.kubeflow.org   TrainJob (pod spec patches: containers' env, volumes)
        /spec/podSpecOverrides/*                             (v2.0)
        /spec/podTemplateOverrides/*/spec                    (v2.1)
        /spec/runtimePatches/*/trainingRuntimeSpec/template/spec/replicatedJobs/*/template/spec/template/spec
                                                             (v2.2 and later)
        kubeflow/trainer v1alpha1 pkg/apis/trainer/v1alpha1/trainjob_types.go
    rollouts.argoproj.io   Rollout
        /spec/template/spec
        argoproj/argo-rollouts v1alpha1 pkg/apis/rollouts/v1alpha1/types.go
    jobs.batch.volcano.sh   Job
        /spec/tasks/*/template/spec
        volcano-sh/apis v1alpha1 pkg/apis/batch/v1alpha1/job.go

Templates and owners (:func:`is_template`): the workloads of ``pod_kinds`` but Pod, and the
custom resources declared with ``podSpecs`` and no ``paths``, are pod templates. The engine
leaves a template with a controller owner alone (its owner was pinned, or its Pods will be:
a ReplicaSet of a Deployment or Rollout, a StatefulSet of a LeaderWorkerSet or of its leader
Pod, a RayCluster of a RayService or RayJob, a Job of a JobSet, a Knative Configuration or
Revision), and ``mode: pods-only`` never rewrites one. Pods are always pinned.

Odd shapes
==========
``find`` never raises on a malformed object: a list where a mapping belongs, ``None``,
numbers, missing fields are skipped silently. The apiserver validates shape; kitpin only
reads what is well-formed. Unknown kinds return empty findings at the cost of one
dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from controller.sites import pointers
from controller.sites.extra import ANY, ExtraSite, Step
from controller.sites.model import EMPTY, KIT_URI_PREFIX, Findings, Site, SiteKind, Unresolvable
from controller.sites.settings import DEFAULT_SETTINGS, SitesSettings, image_repository

__all__ = ["controller_owner", "find", "is_template", "pod_specs", "pod_template_path"]

# The walk below runs on every admission: module globals, not attribute lookups.
_MAP: Final = pointers.MAP
_SEQ: Final = pointers.SEQ


def controller_owner(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with ``controller: true`` (the Deployment of a ReplicaSet, ...)."""
    metadata = obj.get("metadata") if isinstance(obj, _MAP) else None
    owners = metadata.get("ownerReferences") if isinstance(metadata, _MAP) else None
    if isinstance(owners, _SEQ):
        for owner in owners:
            if isinstance(owner, _MAP) and owner.get("controller") is True:
                return owner
    return None


def _group_kind(obj: Mapping[str, Any]) -> tuple[str, str, str] | None:
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if type(api_version) is not str or type(kind) is not str:
        return None
    group, _, version = api_version.rpartition("/")
    return group, version, kind


def pod_template_path(
    obj: Mapping[str, Any], settings: SitesSettings = DEFAULT_SETTINGS
) -> str | None:
    """JSON pointer of the object's pod spec (``/spec/template/spec`` for a Deployment), or
    None when its kind has none in ``SitesSettings.pod_kinds`` (unknown kinds,
    InferenceService, custom resources: :func:`pod_specs` lists all of an object's)."""
    if not isinstance(obj, _MAP):
        return None
    gvk = _group_kind(obj)
    if gvk is None:
        return None
    return settings.pod_kinds.get((gvk[0], gvk[2]))


def is_template(obj: Mapping[str, Any], settings: SitesSettings = DEFAULT_SETTINGS) -> bool:
    """Whether ``obj`` is a pod template: a kind whose references all live in pod specs that
    a controller turns into Pods (the workloads of ``pod_kinds`` but Pod, PodTemplate, the
    custom resources declared with ``podSpecs`` and no ``paths``). The engine leaves such an
    object alone when it has a controller owner (its owner was pinned, or its Pods will be),
    and ``mode: pods-only`` never rewrites it. Not InferenceService, LLMInferenceService or
    resources with ``paths``: their references reach Pods by ways kitpin cannot see (a
    storage initializer's arguments), so they are pinned where they are written."""
    if not isinstance(obj, _MAP):
        return False
    gvk = _group_kind(obj)
    if gvk is None:
        return False
    plan = settings._plans.get((gvk[0], gvk[2]))
    return plan is not None and plan.template


def pod_specs(
    obj: Mapping[str, Any], settings: SitesSettings = DEFAULT_SETTINGS
) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    """(JSON pointer, pod spec) of every pod spec of ``obj`` that :func:`find` walks, in
    document order of the paths: the ``pod_kinds`` one, the ``podSpecs`` of its custom
    resource, a KServe InferenceService's components. For the pull secrets and service
    account of a resource whose pods come from several templates."""
    if not isinstance(obj, _MAP):
        return ()
    gvk = _group_kind(obj)
    if gvk is None:
        return ()
    group, version, kind = gvk
    plan = settings._plans.get((group, kind))
    if plan is None:
        return ()
    found: dict[str, Mapping[str, Any]] = {}
    if plan.pod_tokens is not None:
        spec = _at(obj, plan.pod_tokens)
        if isinstance(spec, _MAP):
            found[plan.pod_pointer] = spec
    if plan.kserve:
        spec_ = obj.get("spec")
        if isinstance(spec_, _MAP):
            for name in _KSERVE_COMPONENTS:
                component = spec_.get(name)
                if isinstance(component, _MAP):
                    found.setdefault(f"/spec/{name}", component)
                    worker = component.get("workerSpec") if name == "predictor" else None
                    if isinstance(worker, _MAP):
                        found.setdefault(f"/spec/{name}/workerSpec", worker)
    for site in plan.extra:
        if not site.versions or version in site.versions:
            for steps in site._pod_steps:
                for pointer, _, node in _reach(obj, steps, 0, "", ""):
                    if isinstance(node, _MAP):
                        found.setdefault(pointer, node)
    return tuple(found.items())


def _at(obj: object, tokens: tuple[str, ...]) -> object:
    node = obj
    for token in tokens:
        node = node.get(token) if isinstance(node, _MAP) else None
    return node


# ---------------------------------------------------------------------------------------
# Finding


def _kit_site(path: str, kind: SiteKind, value: str, where: str) -> Site:
    """The one builder of kit-grammar sites (env values, kit CLI arguments, KServe storage
    URIs). kit accepts ``kit://`` in front of a reference anywhere; a site that has it keeps
    it, so the pinned value differs from what the user wrote only by ``@sha256:...``."""
    return Site(
        path=path,
        kind=kind,
        grammar="kit",
        prefix=KIT_URI_PREFIX if value.startswith(KIT_URI_PREFIX) else "",
        value=value,
        expects_modelkit=True,
        where=where,
    )


def _who(label: str, item: Mapping[str, Any], index: int) -> str:
    """Human name of a list item for messages: ``initContainer "kitops-init"``; built only
    when something is reported (this runs on every admission)."""
    if index < 0:
        return label
    name = item.get("name")
    return f'{label} "{name}"' if type(name) is str else f"{label} #{index}"


_CONTAINER_LISTS: Final = (
    ("initContainers", "initContainer"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeralContainer"),
)
_KIT_SUBCOMMANDS: Final = frozenset({"pull", "unpack"})
# Flags of `kit`, `kit pull` and `kit unpack` that take a separate value (kitops-ml/kitops:
# cmd/root.go, pkg/cmd/options/network.go, pkg/cmd/unpack/cmd.go). All others are switches.
_KIT_VALUE_FLAGS: Final = frozenset(
    {
        "--config",
        "--log-level",
        "--progress",
        "--tls-cert",
        "--cert",
        "--key",
        "--concurrency",
        "--proxy",
        "--dir",
        "--filter",
    }
)
_KIT_VALUE_SHORT: Final = frozenset("df")
_SHELLS: Final = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh"})
_KSERVE_COMPONENTS: Final = ("predictor", "transformer", "explainer")
_KSERVE_NOT_FRAMEWORK: Final = frozenset({"workerSpec", "labels", "annotations", "nodeSelector"})


class _Out:
    __slots__ = ("cfg", "sites", "unresolvable")

    def __init__(self, cfg: SitesSettings) -> None:
        self.cfg = cfg
        self.sites: list[Site] = []
        self.unresolvable: list[Unresolvable] = []


def find(obj: Mapping[str, Any], settings: SitesSettings = DEFAULT_SETTINGS) -> Findings:
    """Every ModelKit reference site in ``obj`` (see the module docstring for the paths).

    Never raises on odd shapes; unknown kinds give :data:`EMPTY`.
    """
    if not isinstance(obj, _MAP):
        return EMPTY
    gvk = _group_kind(obj)
    if gvk is None:
        return EMPTY
    group, version, kind = gvk
    plan = settings._plans.get((group, kind))
    if plan is None:
        return EMPTY
    out = _Out(settings)
    if plan.pod_tokens is not None:
        spec = _at(obj, plan.pod_tokens)
        if isinstance(spec, _MAP):
            _walk_pod_spec(spec, plan.pod_pointer, "", out)
    if plan.kserve:
        _walk_inference_service(obj, kind, out)
    if plan.extra:
        _walk_extra(obj, version, plan.extra, plan.pod_pointer, out)
    if not out.sites and not out.unresolvable:
        return EMPTY
    return Findings(sites=tuple(out.sites), unresolvable=tuple(out.unresolvable))


def _walk_extra(
    obj: Mapping[str, Any],
    version: str,
    extra: tuple[ExtraSite, ...],
    pod_pointer: str,
    out: _Out,
) -> None:
    """The pod specs, then the paths, of the extra sites whose versions match. A pod spec
    or a string reached twice (two entries, or a built-in place) is reported once."""
    walked = {pod_pointer} if pod_pointer else set()
    matching = [s for s in extra if not s.versions or version in s.versions]
    for site in matching:
        for steps in site._pod_steps:
            for pointer, human, node in _reach(obj, steps, 0, "", ""):
                if isinstance(node, _MAP) and pointer not in walked:
                    walked.add(pointer)
                    _walk_pod_spec(node, pointer, f"{site.kind} {human} ", out)
    seen = {s.path for s in out.sites}
    for site in matching:
        if not site.paths:
            continue
        prefixes = out.cfg._kit_uri_prefixes if site.prefix == KIT_URI_PREFIX else (site.prefix,)
        for steps in site._steps:
            for pointer, human, node in _reach(obj, steps, 0, "", ""):
                if type(node) is not str or not node or pointer in seen:
                    continue
                prefix = _prefix_of(node, prefixes)
                if prefix is None:
                    continue
                seen.add(pointer)
                out.sites.append(
                    Site(
                        path=pointer,
                        kind="extra",
                        grammar=site.grammar,
                        prefix=prefix,
                        value=node,
                        expects_modelkit=site.expects_modelkit,
                        where=f"{site.kind} {human}",
                    )
                )


def _prefix_of(value: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if value.startswith(prefix):
            return prefix
    return None


def _walk_pod_spec(spec: Mapping[str, Any], base: str, label: str, out: _Out) -> None:
    for list_name, word in _CONTAINER_LISTS:
        items = spec.get(list_name)
        if not isinstance(items, _SEQ):
            continue
        list_base = f"{base}/{list_name}/"
        list_label = label + word
        for i, container in enumerate(items):
            if isinstance(container, _MAP):
                _walk_container(container, list_base + str(i), list_label, i, out)
    volumes = spec.get("volumes")
    if isinstance(volumes, _SEQ):
        volume_label = label + "volume"
        for i, volume in enumerate(volumes):
            if isinstance(volume, _MAP):
                _walk_volume(volume, f"{base}/volumes/{i}", volume_label, i, out)


def _walk_env(container: Mapping[str, Any], base: str, label: str, index: int, out: _Out) -> int:
    """Report env sites of one container; return how many env entries matched."""
    env = container.get("env")
    if not isinstance(env, _SEQ):
        return 0
    names = out.cfg._env_name_set
    matched = 0
    for j, entry in enumerate(env):
        if not isinstance(entry, _MAP):
            continue
        name = entry.get("name")
        if type(name) is not str or name not in names:
            continue
        matched += 1
        who = _who(label, container, index)
        value = entry.get("value")
        if type(value) is str and value:
            out.sites.append(_kit_site(f"{base}/env/{j}/value", "env", value, f"{who} env {name}"))
        elif entry.get("valueFrom") is not None and not value:
            out.unresolvable.append(
                Unresolvable(
                    path=f"{base}/env/{j}/valueFrom",
                    where=f"{who} env {name}",
                    why=f"{name} is set with valueFrom: kitpin cannot see, so cannot pin, "
                    "that value; write the reference in the manifest (value:) to have it pinned",
                )
            )
    return matched


def _walk_container(
    container: Mapping[str, Any], base: str, label: str, index: int, out: _Out
) -> None:
    matched = _walk_env(container, base, label, index, out)
    image = container.get("image")
    if type(image) is not str:
        return
    cfg = out.cfg
    prefixes = cfg._kit_image_prefixes
    if (
        image.startswith(prefixes) or (not image.islower() and image.lower().startswith(prefixes))
    ) and image_repository(image) in cfg._kit_image_set:
        _walk_kit_cli(container, base, _who(label, container, index), out)
    elif not matched and container.get("envFrom") and "kitops-init" in image:
        if image_repository(image).endswith("/kitops-init"):
            out.unresolvable.append(
                Unresolvable(
                    path=f"{base}/envFrom",
                    where=f"{_who(label, container, index)} envFrom",
                    why="this kitops-init container has no "
                    f"{' or '.join(cfg.env_names)} env value, so its reference comes from "
                    "envFrom (a ConfigMap or Secret) that kitpin cannot see or pin",
                )
            )


def _kit_reference_index(argv: Sequence[object], start: int) -> tuple[str, int] | None:
    """(subcommand, index) of the reference of ``kit pull|unpack`` in ``argv[start:]``."""
    subcommand: str | None = None
    flags_done = False
    i, n = start, len(argv)
    while i < n:
        arg = argv[i]
        if type(arg) is not str:
            return None
        if not flags_done and len(arg) > 1 and arg[0] == "-":
            if arg == "--":
                flags_done = True
            elif arg[1] == "-":
                if "=" not in arg and arg in _KIT_VALUE_FLAGS:
                    i += 1  # the value is the next argument
            else:
                shorts = arg[1:]
                for k, char in enumerate(shorts):
                    if char in _KIT_VALUE_SHORT:
                        if k == len(shorts) - 1:
                            i += 1  # -d DIR; -dDIR and -d=DIR carry their value
                        break
            i += 1
            continue
        if subcommand is None:
            if arg not in _KIT_SUBCOMMANDS:
                return None
            subcommand = arg
        else:
            return subcommand, i
        i += 1
    return None


def _walk_kit_cli(container: Mapping[str, Any], base: str, who: str, out: _Out) -> None:
    command = container.get("command")
    args = container.get("args")
    if args is None:
        args = ()
    if not isinstance(args, _SEQ):
        return
    if command:
        if not isinstance(command, _SEQ) or type(command[0]) is not str:
            return
        program = command[0].rpartition("/")[2]
        if program != "kit":
            if program in _SHELLS:
                script = " ".join(a for a in (*command[1:], *args) if type(a) is str)
                if "kit" in script and ("pull" in script or "unpack" in script):
                    out.unresolvable.append(
                        Unresolvable(
                            path=f"{base}/command",
                            where=f"{who} command",
                            why="the kit container runs a shell script: kitpin cannot pin a "
                            "reference inside a script; use args: [unpack, REF, ...] or the "
                            "MODELKIT_REF env of kitops-init",
                        )
                    )
            return
        argv: Sequence[object] = (*command, *args)
        found = _kit_reference_index(argv, 1)
    else:
        argv = args
        found = _kit_reference_index(argv, 0)
    if found is None:
        return
    subcommand, index = found
    if command and index < len(command):
        field_name, position = "command", index
    else:
        field_name, position = "args", index - (len(command) if command else 0)
    value = argv[index]
    assert isinstance(value, str)
    where = f"{who} {field_name}[{position}] (kit {subcommand})"
    if "$(" in value:
        _kit_cli_variable(
            container, base, who, where, value, f"{base}/{field_name}/{position}", out
        )
        return
    out.sites.append(_kit_site(f"{base}/{field_name}/{position}", "kit-cli-args", value, where))


def _kit_cli_variable(
    container: Mapping[str, Any], base: str, who: str, where: str, value: str, path: str, out: _Out
) -> None:
    """The kit reference argument is ``$(NAME)``: Kubernetes expands it from env."""
    name = value[2:-1] if value.startswith("$(") and value.endswith(")") else ""
    if not name or "$" in name or "(" in name or ")" in name:
        out.unresolvable.append(
            Unresolvable(
                path=path,
                where=where,
                why=f"the reference {value!r} is built from variables: kitpin can pin only a "
                "plain reference or exactly $(NAME) with NAME set by value in this container",
            )
        )
        return
    if name in out.cfg._env_name_set:
        return  # already reported as an env site
    env = container.get("env")
    found: tuple[int, Mapping[str, Any]] | None = None
    if isinstance(env, _SEQ):
        for j, entry in enumerate(env):
            if isinstance(entry, _MAP) and entry.get("name") == name:
                found = (j, entry)  # the last definition wins, as in Kubernetes
    if found is None:
        out.unresolvable.append(
            Unresolvable(
                path=path,
                where=where,
                why=f"the reference is $({name}) but this container has no env {name}",
            )
        )
        return
    j, entry = found
    env_value = entry.get("value")
    if type(env_value) is str and env_value:
        used_by = where.removeprefix(who + " ")
        out.sites.append(
            _kit_site(
                f"{base}/env/{j}/value",
                "kit-cli-args",
                env_value,
                f"{who} env {name} (used by {used_by})",
            )
        )
    else:
        out.unresolvable.append(
            Unresolvable(
                path=f"{base}/env/{j}",
                where=f"{who} env {name}",
                why=f"the kit reference comes from env {name}, which has no literal value "
                "(valueFrom?): kitpin cannot see, so cannot pin, it",
            )
        )


def _walk_volume(volume: Mapping[str, Any], base: str, label: str, index: int, out: _Out) -> None:
    image = volume.get("image")
    if image is not None and isinstance(image, _MAP):
        reference = image.get("reference")
        if type(reference) is str and reference:
            out.sites.append(
                Site(
                    path=f"{base}/image/reference",
                    kind="image-volume",
                    grammar="image",
                    value=reference,
                    expects_modelkit=False,
                    where=f"{_who(label, volume, index)} image.reference",
                )
            )
    csi = volume.get("csi")
    if csi is not None and isinstance(csi, _MAP):
        driver = csi.get("driver")
        if type(driver) is str and driver in out.cfg._csi_driver_set:
            attributes = csi.get("volumeAttributes")
            if isinstance(attributes, _MAP):
                key = driver + "/reference"
                reference = attributes.get(key)
                if type(reference) is str and reference:
                    out.sites.append(
                        Site(
                            path=f"{base}/csi/volumeAttributes/{pointers.escape(key)}",
                            kind="modelpack-csi",
                            grammar="image",
                            value=reference,
                            expects_modelkit=True,
                            where=f"{_who(label, volume, index)} csi volumeAttributes[{key}]",
                        )
                    )


def _kit_uri(value: object, path: str, where: str, out: _Out) -> None:
    if type(value) is str and value.startswith(out.cfg._kit_uri_prefixes):
        prefix = _prefix_of(value, out.cfg._kit_uri_prefixes)
        out.sites.append(
            Site(
                path=path,
                kind="kserve-storage-uri",
                grammar="kit",
                prefix=prefix or KIT_URI_PREFIX,
                value=value,
                expects_modelkit=True,
                where=where,
            )
        )


def _storage_uris(holder: Mapping[str, Any], base: str, label: str, out: _Out) -> None:
    uris = holder.get("storageUris")
    if not isinstance(uris, _SEQ):
        return
    for i, entry in enumerate(uris):
        if isinstance(entry, _MAP):
            _kit_uri(
                entry.get("uri"),
                f"{base}/storageUris/{i}/uri",
                f"{label}.storageUris[{i}].uri",
                out,
            )
        else:  # tolerate a list of plain strings
            _kit_uri(entry, f"{base}/storageUris/{i}", f"{label}.storageUris[{i}]", out)


def _walk_inference_service(obj: Mapping[str, Any], kind: str, out: _Out) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, _MAP):
        return
    for name in _KSERVE_COMPONENTS:
        component = spec.get(name)
        if not isinstance(component, _MAP):
            continue
        base = f"/spec/{name}"
        label = f"{kind} {name}"
        _storage_uris(component, base, label, out)
        for key, member in component.items():
            if type(key) is not str or key in _KSERVE_NOT_FRAMEWORK or not isinstance(member, _MAP):
                continue
            member_base = f"{base}/{pointers.escape(key)}"
            member_label = f"{label}.{key}"
            _kit_uri(
                member.get("storageUri"),
                f"{member_base}/storageUri",
                f"{member_label}.storageUri",
                out,
            )
            _storage_uris(member, member_base, member_label, out)
            _walk_env(member, member_base, member_label, -1, out)
        _walk_pod_spec(component, base, f"{name} ", out)
        if name == "predictor":
            worker = component.get("workerSpec")
            if isinstance(worker, _MAP):
                _walk_pod_spec(worker, f"{base}/workerSpec", "predictor workerSpec ", out)


def _reach(
    node: object, steps: tuple[Step, ...], at: int, pointer: str, human: str
) -> Iterator[tuple[str, str, object]]:
    """(JSON pointer, dotted path for messages, value) of every node ``steps`` reach from
    ``node``; missing members, out-of-range indexes and wrong types end a branch quietly."""
    if at == len(steps):
        yield pointer, human, node
        return
    step = steps[at]
    if type(step) is str:
        if isinstance(node, _MAP):
            if step in node:
                dot = "." if human else ""
                yield from _reach(
                    node[step],
                    steps,
                    at + 1,
                    f"{pointer}/{pointers.escape(step)}",
                    f"{human}{dot}{step}",
                )
        elif isinstance(node, _SEQ) and step.isascii() and step.isdigit():
            if (step == "0" or step[0] != "0") and int(step) < len(node):
                yield from _reach(
                    node[int(step)], steps, at + 1, f"{pointer}/{step}", f"{human}[{step}]"
                )
        return
    assert isinstance(step, int)
    if isinstance(node, _SEQ):
        indexes = range(len(node)) if step < 0 else (step,) if step < len(node) else ()
        for i in indexes:
            yield from _reach(node[i], steps, at + 1, f"{pointer}/{i}", f"{human}[{i}]")
    elif step == ANY and isinstance(node, _MAP):
        dot = "." if human else ""
        for key, value in node.items():
            if type(key) is str:
                yield from _reach(
                    value, steps, at + 1, f"{pointer}/{pointers.escape(key)}", f"{human}{dot}{key}"
                )
