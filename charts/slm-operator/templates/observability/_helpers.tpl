{{/*
Names and labels of the observability objects. Self-contained (they do not depend on the
chart's other helpers) so this folder renders on its own; the fullname follows the usual
nameOverride / fullnameOverride rules, truncated to 63 characters.
*/}}
{{- define "slm-operator.observability.fullname" -}}
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

{{- define "slm-operator.observability.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slm-operator
app.kubernetes.io/component: observability
{{- end -}}

{{/* The observability.<key> values map, or an empty one when the chart's values lack it. */}}
{{- define "slm-operator.observability.values" -}}
{{- $o := .root.Values.observability | default dict -}}
{{- toYaml (get $o .key | default dict) -}}
{{- end -}}
