{{/*
Names and labels: the chart's and the release's names, the names of the objects it creates and of the image, and
the standard labels and selectors.

The chart's helpers, by concern: lib/_names.tpl (this file), lib/_values.tpl (numbers, "is it set", small derived
values), lib/_keda.tpl (replica bounds, PromQL scope, triggers), lib/_pod.tpl (the worker pod). The render-time
checks are in validate.yaml, the install notes in _notes.tpl. Files whose name starts with "_" render nothing.
*/}}

{{/*
Chart name.
*/}}
{{- define "philotes-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already contains the chart name.
*/}}
{{- define "philotes-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "philotes-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "philotes-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "philotes-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "philotes-worker.labels" -}}
helm.sh/chart: {{ include "philotes-worker.chart" . }}
{{ include "philotes-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: philotes
{{- end }}

{{- define "philotes-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "philotes-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "philotes-worker.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "philotes-worker.secretName" -}}
{{- default (printf "%s-db" (include "philotes-worker.fullname" .)) .Values.database.existingSecret }}
{{- end }}

{{/*
Name of the backfill Job: <fullname>-backfill-<id>, with the full name shortened so that the id always survives
within 63 characters (the Job controller puts the name in a label).
*/}}
{{- define "philotes-worker.backfillJobName" -}}
{{- $suffix := printf "-backfill-%s" (include "philotes-worker.num" .Values.backfillJob.id) }}
{{- printf "%s%s" (include "philotes-worker.fullname" . | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}
