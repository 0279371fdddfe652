{{/*
The base of every object's name: fullnameOverride, else the release name when it already says
"blaze" (release `blaze` gives `blaze-operator`, the names of manifests/install.yaml), else
RELEASE-blaze. Kubernetes names stop at 63 characters.
*/}}
{{- define "blaze.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" -}}
{{- else if contains "blaze" .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-blaze" .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* The operator's Deployment, ServiceAccount and RBAC objects. */}}
{{- define "blaze.operator" -}}
{{- printf "%s-operator" (include "blaze.fullname" .) -}}
{{- end }}

{{- define "blaze.labels" -}}
{{ include "blaze.selector" . }}
app.kubernetes.io/part-of: blaze
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "blaze.selector" -}}
app.kubernetes.io/name: blaze-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator image: repository:tag, tag defaulting to the chart's appVersion. */}}
{{- define "blaze.image" -}}
{{- $i := .Values.operator.image -}}
{{- if $i.digest -}}
{{- printf "%s@%s" $i.repository $i.digest -}}
{{- else -}}
{{- printf "%s:%s" $i.repository (default .Chart.AppVersion $i.tag) -}}
{{- end -}}
{{- end }}
