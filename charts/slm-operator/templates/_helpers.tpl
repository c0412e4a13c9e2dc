{{/*
Names: every name is cut to 63 characters (the DNS label limit) without a trailing dash.
*/}}
{{- define "slm-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "slm-operator.fullname" -}}
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

{{/* A name with a suffix, still within 63 characters: "slm-operator.suffixed" (list $ "test") */}}
{{- define "slm-operator.suffixed" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $base := include "slm-operator.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix -}}
{{- end -}}

{{- define "slm-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels. managed-by is Helm here, never "slm-operator": the operator only watches objects
labelled app.kubernetes.io/managed-by=slm-operator, so it never touches its own chart.
*/}}
{{- define "slm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slm-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "slm-operator.labels" -}}
helm.sh/chart: {{ include "slm-operator.chart" . }}
{{ include "slm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slm-operator
{{- end -}}

{{- define "slm-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "slm-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
An image reference from {registry, repository, tag, digest}: global.imageRegistry replaces
the registry (air-gapped mirrors); a digest wins over the tag.
Usage: include "slm-operator.image" (dict "image" .Values.image "global" .Values.global "default" .Chart.AppVersion)
*/}}
{{- define "slm-operator.image" -}}
{{- $registry := .image.registry -}}
{{- if .global.imageRegistry -}}{{- $registry = .global.imageRegistry -}}{{- end -}}
{{- $ref := .image.repository -}}
{{- if $registry -}}{{- $ref = printf "%s/%s" (trimSuffix "/" $registry) .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (required "an image needs a tag or a digest" (default .default .image.tag)) -}}
{{- end -}}
{{- end -}}

{{- define "slm-operator.operatorImage" -}}
{{- include "slm-operator.image" (dict "image" .Values.image "global" .Values.global "default" .Chart.AppVersion) -}}
{{- end -}}

{{- define "slm-operator.peeringName" -}}
{{- default (include "slm-operator.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* Peering is on when more than one replica runs. */}}
{{- define "slm-operator.peering" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{/* "true" when the operator is limited to a list of namespaces. */}}
{{- define "slm-operator.namespaced" -}}
{{- if .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* Fail early, with the fix, on combinations the schema cannot express well. */}}
{{- define "slm-operator.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaces") (not .Values.watchNamespaces) -}}
{{- fail "rbac.scope=namespaces needs watchNamespaces: list the namespaces the operator may work in" -}}
{{- end -}}
{{- end -}}

{{/* Argo CD sync wave annotation. */}}
{{- define "slm-operator.syncWave" -}}
argocd.argoproj.io/sync-wave: {{ .Values.gitops.syncWave | quote }}
{{- end -}}
