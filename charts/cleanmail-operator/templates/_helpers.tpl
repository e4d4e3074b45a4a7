{{/* The name of every object of the release (the release name unless overridden). */}}
{{- define "cleanmail.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Kept for templates written against chart 0.1: same as cleanmail.fullname. */}}
{{- define "cleanmail.name" -}}
{{- include "cleanmail.fullname" . -}}
{{- end -}}

{{- define "cleanmail.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "cleanmail.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Deployment's selector: immutable, so unchanged since chart 0.1. */}}
{{- define "cleanmail.selector" -}}
app.kubernetes.io/name: cleanmail-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cleanmail.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cleanmail.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cleanmail.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The namespace of the first tenant. */}}
{{- define "cleanmail.tenantNamespace" -}}
{{- required "tenant.namespace is required when tenant.create is true" .Values.tenant.namespace -}}
{{- end -}}

{{- define "cleanmail.tenantName" -}}
{{- default .Values.tenant.namespace .Values.tenant.name -}}
{{- end -}}

{{/* Cross-field checks JSON Schema cannot express; included by the Deployment. */}}
{{- define "cleanmail.validate" -}}
{{- $watched := .Values.watchNamespaces -}}
{{- if and .Values.tenant.create $watched (not (has .Values.tenant.namespace $watched)) -}}
{{- fail (printf "tenant.namespace %q is not in watchNamespaces %v: the operator would never see the tenant" .Values.tenant.namespace $watched) -}}
{{- end -}}
{{- if and .Values.tenant.create .Values.tenant.createNamespace (eq .Values.tenant.namespace .Release.Namespace) -}}
{{- fail (printf "tenant.namespace %q is the release namespace, which helm does not own: set tenant.createNamespace=false" .Values.tenant.namespace) -}}
{{- end -}}
{{- if ne (len $watched) (len (uniq $watched)) -}}
{{- fail (printf "watchNamespaces lists a namespace twice: %v" $watched) -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "string" .Values.podDisruptionBudget.minAvailable)) (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%v) must be below replicaCount (%v), or no node could ever be drained" .Values.podDisruptionBudget.minAvailable .Values.replicaCount) -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor scrapes the metrics Service" -}}
{{- end -}}
{{- end -}}

{{/* Exactly what the operator uses, in the watched namespaces (or cluster-wide). */}}
{{- define "cleanmail.rules" -}}
# The SCIM edge writes users and groups; the controller adds and removes its finalizers.
- apiGroups: [cleanmail.ch]
  resources: [cleanmailusers, cleanmailgroups]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [cleanmail.ch]
  resources: [cleanmailtenants]
  verbs: [get, list, watch]
- apiGroups: [cleanmail.ch]
  resources: [cleanmailusers/status, cleanmailgroups/status, cleanmailtenants/status]
  verbs: [get, patch, update]
- apiGroups: [cleanmail.ch]
  resources: [cleanmailusers/finalizers, cleanmailgroups/finalizers]
  verbs: [update]
# Token and database Secrets named by tenants.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{- define "cleanmail.subject" -}}
- kind: ServiceAccount
  name: {{ include "cleanmail.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
