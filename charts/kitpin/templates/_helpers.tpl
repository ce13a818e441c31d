{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "kitpin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kitpin.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kitpin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kitpin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kitpin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kitpin.labels" -}}
helm.sh/chart: {{ include "kitpin.chart" . }}
{{ include "kitpin.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kitpin
{{- end -}}

{{- define "kitpin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kitpin.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kitpin.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The Service's in-cluster DNS names: the serving certificate's SANs. */}}
{{- define "kitpin.serviceDNSNames" -}}
{{- $svc := include "kitpin.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson -}}
{{- end -}}

{{/* TLS --------------------------------------------------------------------------------

Exactly one source of the serving certificate:
  certManager     tls.certManager.enabled=true
  existingSecret  tls.existingSecret set (with tls.caBundle, or tls.caBundleInjected=true)
  generate        neither: the chart generates a CA and a serving certificate
*/}}

{{- define "kitpin.tlsMode" -}}
{{- if .Values.tls.certManager.enabled -}}certManager
{{- else if .Values.tls.existingSecret -}}existingSecret
{{- else -}}generate
{{- end -}}
{{- end -}}

{{- define "kitpin.tlsSecretName" -}}
{{- if eq (include "kitpin.tlsMode" .) "existingSecret" -}}
{{- .Values.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" (include "kitpin.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "kitpin.certificateName" -}}
{{- printf "%s-serving" (include "kitpin.fullname" .) -}}
{{- end -}}

{{/* Webhook resources -----------------------------------------------------------------

Every resource kitpin's handlers are registered for (controller/admission/webhook.py
CORE_RESOURCES, DEFAULT_RESOURCES and handler_ids): the core kinds, then the shipped custom
resources (kitpin.defaultSites, minus settings.sites.disabledDefaults), then the extra CRD
sites of settings.sites.extra (handler ids pin-<kind lowercased>[-<group with dots as
dashes>], like webhook.WebhookResource.slug). An extra site of a default's group and kind
replaces it, as in kitpin (controller/sites/settings.py). Several extra entries of one kind
make one webhook: any version if one of them lists none, else all the versions they list.
Rendered as a YAML list; callers use fromYamlArray.
`template: true` marks the pod templates (controller/sites/finding.py is_template: the
workload kinds, and custom resources with podSpecs and no paths), skipped by the mutating
webhook in pods-only mode, where kitpin never rewrites them.
*/}}

{{/* The shipped custom resources: controller/sites/defaults.py DEFAULT_SITES (names are
<plural>.<group>; a test keeps the two lists equal). All namespaced, every version. */}}
{{- define "kitpin.defaultSites" -}}
{{- list
  (dict "name" "leaderworkersets.leaderworkerset.x-k8s.io" "kind" "LeaderWorkerSet" "template" true)
  (dict "name" "jobsets.jobset.x-k8s.io" "kind" "JobSet" "template" true)
  (dict "name" "rayclusters.ray.io" "kind" "RayCluster" "template" true)
  (dict "name" "rayservices.ray.io" "kind" "RayService" "template" true)
  (dict "name" "rayjobs.ray.io" "kind" "RayJob" "template" true)
  (dict "name" "services.serving.knative.dev" "kind" "Service" "template" true)
  (dict "name" "configurations.serving.knative.dev" "kind" "Configuration" "template" true)
  (dict "name" "revisions.serving.knative.dev" "kind" "Revision" "template" true)
  (dict "name" "llminferenceservices.serving.kserve.io" "kind" "LLMInferenceService" "template" false)
  (dict "name" "pytorchjobs.kubeflow.org" "kind" "PyTorchJob" "template" true)
  (dict "name" "tfjobs.kubeflow.org" "kind" "TFJob" "template" true)
  (dict "name" "mpijobs.kubeflow.org" "kind" "MPIJob" "template" true)
  (dict "name" "xgboostjobs.kubeflow.org" "kind" "XGBoostJob" "template" true)
  (dict "name" "paddlejobs.kubeflow.org" "kind" "PaddleJob" "template" true)
  (dict "name" "jaxjobs.kubeflow.org" "kind" "JAXJob" "template" true)
  (dict "name" "trainjobs.trainer.kubeflow.org" "kind" "TrainJob" "template" true)
  (dict "name" "rollouts.argoproj.io" "kind" "Rollout" "template" true)
  (dict "name" "jobs.batch.volcano.sh" "kind" "Job" "template" true)
  | toYaml -}}
{{- end -}}

{{- define "kitpin.webhookResources" -}}
{{- $out := list
  (dict "id" "pods" "group" "" "versions" (list "v1") "resource" "pods" "scope" "Namespaced" "template" false)
  (dict "id" "pods-ephemeralcontainers" "group" "" "versions" (list "v1") "resource" "pods/ephemeralcontainers" "scope" "Namespaced" "template" false "operations" (list "UPDATE"))
  (dict "id" "podtemplates" "group" "" "versions" (list "v1") "resource" "podtemplates" "scope" "Namespaced" "template" true)
  (dict "id" "replicationcontrollers" "group" "" "versions" (list "v1") "resource" "replicationcontrollers" "scope" "Namespaced" "template" true)
  (dict "id" "deployments" "group" "apps" "versions" (list "v1") "resource" "deployments" "scope" "Namespaced" "template" true)
  (dict "id" "statefulsets" "group" "apps" "versions" (list "v1") "resource" "statefulsets" "scope" "Namespaced" "template" true)
  (dict "id" "daemonsets" "group" "apps" "versions" (list "v1") "resource" "daemonsets" "scope" "Namespaced" "template" true)
  (dict "id" "replicasets" "group" "apps" "versions" (list "v1") "resource" "replicasets" "scope" "Namespaced" "template" true)
  (dict "id" "jobs" "group" "batch" "versions" (list "v1") "resource" "jobs" "scope" "Namespaced" "template" true)
  (dict "id" "cronjobs" "group" "batch" "versions" (list "v1") "resource" "cronjobs" "scope" "Namespaced" "template" true)
  (dict "id" "inferenceservices" "group" "serving.kserve.io" "versions" (list "v1beta1") "resource" "inferenceservices" "scope" "Namespaced" "template" false)
-}}
{{- $disabled := .Values.settings.sites.disabledDefaults | default list -}}
{{- $seen := dict -}}
{{- $order := list -}}
{{- range include "kitpin.defaultSites" . | fromYamlArray -}}
{{- if not (has .name $disabled) -}}
{{- $plural := index (splitList "." .name) 0 -}}
{{- $group := trimPrefix (printf "%s." $plural) .name -}}
{{- $id := printf "%s-%s" (lower .kind) (replace "." "-" $group) -}}
{{- $_ := set $seen $id (dict "id" $id "group" $group "versions" (list "*") "resource" $plural "scope" "Namespaced" "template" .template "default" true) -}}
{{- $order = append $order $id -}}
{{- end -}}
{{- end -}}
{{- range $i, $site := .Values.settings.sites.extra -}}
{{- $id := lower $site.kind -}}
{{- if $site.group -}}{{- $id = printf "%s-%s" $id (replace "." "-" $site.group) -}}{{- end -}}
{{- $versions := $site.versions | default (list "*") -}}
{{- $pods := not (empty $site.podSpecs) -}}
{{- $paths := not (empty $site.paths) -}}
{{- $previous := get $seen $id -}}
{{- if and $previous (not $previous.default) -}}
{{- if ne $previous.resource $site.plural -}}
{{- fail (printf "settings.sites.extra[%d]: %s/%s is listed with plural %q and %q; one kind has one plural" $i $site.group $site.kind $previous.resource $site.plural) -}}
{{- end -}}
{{- if or (has "*" $previous.versions) (has "*" $versions) -}}
{{- $_ := set $previous "versions" (list "*") -}}
{{- else -}}
{{- $_ := set $previous "versions" (concat $previous.versions $versions | uniq) -}}
{{- end -}}
{{- $_ := set $previous "pods" (or $previous.pods $pods) -}}
{{- $_ := set $previous "paths" (or $previous.paths $paths) -}}
{{- else -}}
{{- if not $previous -}}{{- $order = append $order $id -}}{{- end -}}
{{- $_ := set $seen $id (dict "id" $id "group" $site.group "versions" $versions "resource" $site.plural "scope" ($site.scope | default "*") "pods" $pods "paths" $paths) -}}
{{- end -}}
{{- end -}}
{{- range $order -}}
{{- $entry := get $seen . -}}
{{- if not $entry.default -}}
{{- $_ := set $entry "template" (and $entry.pods (not $entry.paths)) -}}
{{- end -}}
{{- $out = append $out (omit $entry "default" "pods" "paths") -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The namespaceSelector both webhook configurations use. */}}
{{- define "kitpin.namespaceSelector" -}}
{{- $excluded := concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) (.Values.settings.ignoredNamespaces | default list) | uniq -}}
{{- $expressions := list
  (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded)
  (dict "key" "kitpin.dev/ignore" "operator" "NotIn" "values" (list "true"))
-}}
{{- $user := .Values.webhook.namespaceSelector | default dict -}}
{{- $selector := dict "matchExpressions" (concat $expressions ($user.matchExpressions | default list)) -}}
{{- if $user.matchLabels -}}
{{- $_ := set $selector "matchLabels" $user.matchLabels -}}
{{- end -}}
{{- toYaml $selector -}}
{{- end -}}

{{/* One webhook entry. Arguments: dict "root" $ "r" <resource> "kind" "pin"|"check" "caBundle" <b64 or ""> */}}
{{/*
The policy kinds (controller/webhook.py POLICY_PLURALS): validated by kitpin's own parser at
/check-<plural>, so every stored policy is one kitpin can load.
*/}}
{{- define "kitpin.policyResources" -}}
{{- list
  (dict "id" "clustermodelkitpolicies" "group" "kitpin.dev" "versions" (list "v1alpha1") "resource" "clustermodelkitpolicies" "scope" "Cluster")
  (dict "id" "modelkitpolicies" "group" "kitpin.dev" "versions" (list "v1alpha1") "resource" "modelkitpolicies" "scope" "Namespaced")
  | toYaml -}}
{{- end -}}

{{- define "kitpin.webhookEntry" -}}
{{- $root := .root -}}
- name: {{ printf "%s-%s.kitpin.dev" .kind .r.id }}
  admissionReviewVersions: ["v1"]
  sideEffects: None
  # Fail-open until a kitpin replica serves and arms it to the kitpin.dev/failure-policy
  # annotation (webhook.failurePolicy): see webhooks.yaml.
  failurePolicy: Ignore
  timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
  matchPolicy: Equivalent
  {{- if eq .kind "pin" }}
  reinvocationPolicy: IfNeeded
  {{- end }}
  clientConfig:
    service:
      name: {{ include "kitpin.fullname" $root }}
      namespace: {{ $root.Release.Namespace }}
      path: {{ printf "/%s-%s" .kind .r.id }}
      port: {{ $root.Values.service.port }}
    {{- if .caBundle }}
    caBundle: {{ .caBundle }}
    {{- end }}
  rules:
    - apiGroups: [{{ .r.group | quote }}]
      apiVersions: {{ toJson .r.versions }}
      resources: [{{ .r.resource | quote }}]
      operations: {{ toJson (.r.operations | default (list "CREATE" "UPDATE")) }}
      scope: {{ .r.scope | quote }}
  namespaceSelector:
    {{- include "kitpin.namespaceSelector" $root | nindent 4 }}
  {{- with $root.Values.webhook.objectSelector }}
  objectSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Settings file (docs/settings.md) from .Values.settings. */}}
{{- define "kitpin.settingsDocument" -}}
{{- $s := .Values.settings -}}
{{- $cache := dict
  "ttlSeconds" $s.cache.ttlSeconds
  "negativeTtlSeconds" $s.cache.negativeTtlSeconds
  "staleIfErrorSeconds" $s.cache.staleIfErrorSeconds
  "refreshAhead" $s.cache.refreshAhead
  "maxEntries" (int $s.cache.maxEntries)
  "enabled" $s.cache.enabled
-}}
{{- $extra := list -}}
{{- range $s.sites.extra -}}
{{- $extra = append $extra (omit . "plural" "scope") -}}
{{- end -}}
{{- $sites := dict "envNames" $s.sites.envNames "kitCliImages" $s.sites.kitCliImages "uriPrefixes" ($s.sites.uriPrefixes | default list) "disabledDefaults" ($s.sites.disabledDefaults | default list) "extra" $extra -}}
{{- $server := dict "drainSeconds" $s.server.drainSeconds "shutdownSeconds" $s.server.shutdownSeconds -}}
{{- $tags := dict
  "records" $s.tags.records
  "flushIntervalSeconds" $s.tags.flushIntervalSeconds
  "queueSize" (int $s.tags.queueSize)
-}}
{{- $drift := dict
  "enabled" $s.drift.enabled
  "intervalSeconds" $s.drift.intervalSeconds
  "budgetPerMinute" (int $s.drift.budgetPerMinute)
-}}
{{- $doc := dict
  "mode" $s.mode
  "failure" $s.failure
  "deadlineSeconds" $s.deadlineSeconds
  "webhookTimeoutSeconds" (int .Values.webhook.timeoutSeconds)
  "ignoredNamespaces" ($s.ignoredNamespaces | default list)
  "cache" $cache
  "sites" $sites
  "server" $server
  "tags" $tags
  "drift" $drift
-}}
{{- toYaml $doc -}}
{{- end -}}

{{/* Registry config file (controller/registry/hosts.py) from .Values.registry. */}}
{{- define "kitpin.registryDocument" -}}
{{- $r := .Values.registry -}}
{{- $doc := dict -}}
{{- if $r.hosts -}}{{- $_ := set $doc "registries" $r.hosts -}}{{- end -}}
{{- if $r.allowedRegistries -}}{{- $_ := set $doc "allowedRegistries" $r.allowedRegistries -}}{{- end -}}
{{- if $r.deniedNetworks -}}{{- $_ := set $doc "deniedNetworks" $r.deniedNetworks -}}{{- end -}}
{{- if $r.deniedHostnames -}}{{- $_ := set $doc "deniedHostnames" $r.deniedHostnames -}}{{- end -}}
{{- toYaml $doc -}}
{{- end -}}

{{- define "kitpin.caBundlesMounted" -}}
{{- if or .Values.registry.caBundles .Values.registry.existingCABundlesConfigMap -}}true{{- end -}}
{{- end -}}

{{/* Caller authentication (clientAuth): where the client CA comes from, mounted at
/etc/kitpin/client-ca/ca.crt. The chart's own ConfigMap (caBundle), an existing ConfigMap or
an existing Secret; validate.yaml makes sure exactly one is set when enabled. */}}
{{- define "kitpin.clientCAVolume" -}}
{{- $ca := .Values.clientAuth -}}
{{- if $ca.caBundle -}}
configMap:
  name: {{ include "kitpin.fullname" . }}-client-ca
  items:
    - {key: ca.crt, path: ca.crt}
{{- else if $ca.existingConfigMap -}}
configMap:
  name: {{ $ca.existingConfigMap }}
  items:
    - {key: {{ $ca.caKey }}, path: ca.crt}
{{- else -}}
secret:
  secretName: {{ $ca.existingSecret }}
  items:
    - {key: {{ $ca.caKey }}, path: ca.crt}
{{- end -}}
{{- end -}}
