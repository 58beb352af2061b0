{{/* Full name of the release's objects: <release>-cartero, or <release> when it already says cartero. */}}
{{- define "cartero.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Names of cluster-scoped objects: unique per release namespace, as releases in several namespaces may coexist. */}}
{{- define "cartero.clusterName" -}}
{{- printf "%s-%s" (include "cartero.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{- define "cartero.selectorLabels" -}}
app.kubernetes.io/name: cartero-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cartero.labels" -}}
{{ include "cartero.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: cartero
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "cartero.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cartero.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "cartero.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "cartero.image" -}}
{{- include "cartero.imageRef" (dict "image" .Values.image "chart" .Chart) -}}
{{- end -}}

{{- define "cartero.relayImage" -}}
{{- include "cartero.imageRef" (dict "image" .Values.relayImage "chart" .Chart) -}}
{{- end -}}

{{/* The one namespace the operator watches, or "" for all. */}}
{{- define "cartero.watchNamespace" -}}
{{- join "," .Values.watchNamespaces -}}
{{- end -}}

{{- define "cartero.metricsServiceName" -}}
{{- printf "%s-metrics" (include "cartero.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Rules the operator needs in the namespaces it watches. Each verb is there because the operator makes that
request (test/e2e/chart.test.ts checks the request log against these rules):
- smtprelays, ippools: informers (list, watch); the finalizer cartero.io/drain (patch smtprelays); status.
- statefulsets, configmaps, services, secrets, poddisruptionbudgets: informers, and server-side apply of
  the fleet's objects (patch; create when apply creates the object). Secrets are watched in full: the
  tenants' and routes' credential Secrets and DKIM keys are copied into each fleet's own Secret; a DKIM
  key Secret asked for with `generate: true` is created (create) when it does not exist.
- poddisruptionbudgets delete: a fleet whose spec turns its budget off (podDisruptionBudget.enabled: false).
- pods: informer (readiness and addresses of relay pods; their admin APIs are called directly).
- events create: Warning/Normal events on SmtpRelays.
- servicemonitors: one per fleet, when the Prometheus Operator is installed.
*/}}
{{- define "cartero.namespacedRules" -}}
- apiGroups: [cartero.io]
  resources: [smtprelays, ippools]
  verbs: [list, watch]
- apiGroups: [cartero.io]
  resources: [smtprelays]
  verbs: [patch]
- apiGroups: [cartero.io]
  resources: [smtprelays/status, ippools/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps, services, secrets]
  verbs: [list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.rbac.serviceMonitors }}
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [create, patch]
{{- end }}
{{- end -}}

{{/*
Cluster-scoped rules, in both modes: reading two named CRDs tells the operator whether the Prometheus
Operator and Cilium are installed (nothing else about CRDs is readable); CiliumEgressGatewayPolicies are
cluster-scoped objects (only with rbac.ciliumEgressGatewayPolicies).
*/}}
{{- define "cartero.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get]
  resourceNames:
    - servicemonitors.monitoring.coreos.com
    - ciliumegressgatewaypolicies.cilium.io
{{- if .Values.rbac.ciliumEgressGatewayPolicies }}
- apiGroups: [cilium.io]
  resources: [ciliumegressgatewaypolicies]
  verbs: [list, create, patch, delete]
{{- end }}
{{- end -}}

{{/* The optional Redis (redis.enabled): its objects' name, labels, and the namespaces of the SmtpRelays using it. */}}
{{- define "cartero.redisName" -}}
{{- printf "%s-redis" (include "cartero.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cartero.redisSelectorLabels" -}}
app.kubernetes.io/name: cartero-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cartero.redisLabels" -}}
{{ include "cartero.redisSelectorLabels" . }}
app.kubernetes.io/component: ratelimit-store
app.kubernetes.io/part-of: cartero
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* redis.relayNamespaces, else watchNamespaces (a list; empty: every namespace, no Secret copies). */}}
{{- define "cartero.redisNamespaces" -}}
{{- toJson (default .Values.watchNamespaces .Values.redis.relayNamespaces) -}}
{{- end -}}
