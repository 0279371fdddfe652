{{- define "blaze.labels" -}}
app.kubernetes.io/name: blaze-operator
app.kubernetes.io/part-of: blaze
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "blaze.selector" -}}
app.kubernetes.io/name: blaze-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
