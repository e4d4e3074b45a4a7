{{- define "cleanmail.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cleanmail.labels" -}}
app.kubernetes.io/name: cleanmail-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "cleanmail.selector" -}}
app.kubernetes.io/name: cleanmail-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
