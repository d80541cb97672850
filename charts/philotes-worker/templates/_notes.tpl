{{/*
The release notes, shared with the philotes umbrella chart (whose NOTES.txt calls it with the subchart's values).
*/}}
{{- define "philotes-worker.notes" -}}
Philotes worker {{ include "philotes-worker.fullname" . }} is installed in namespace {{ .Release.Namespace }}.

Metrics, health and readiness: port {{ include "philotes-worker.num" .Values.worker.httpPort }} (/metrics, /healthz, /readyz)
  kubectl -n {{ .Release.Namespace }} port-forward svc/{{ include "philotes-worker.fullname" . }} {{ include "philotes-worker.num" .Values.service.port }}
{{- $wh := toString .Values.worker.iceberg.warehouse }}
{{- if and (hasPrefix "file://" $wh) (not (get (.Values.dataVolume | default dict) "persistentVolumeClaim")) }}

WARNING: worker.iceberg.warehouse is {{ $wh }} on the pod's own data volume (dataVolume,
         an emptyDir by default): the lake is deleted with the pod (a rollout after `helm upgrade`, an eviction, a
         node drain), while the catalog in the buffer database still lists its files. Fine for a throwaway try; for
         anything else use an object store (worker.iceberg.warehouse: s3://bucket/prefix with worker.iceberg.s3.*,
         see "Object storage (S3)" in the chart README) or a persistentVolumeClaim as dataVolume.
{{- end }}
{{- if .Values.keda.enabled }}

Autoscaling: KEDA ScaledObject {{ include "philotes-worker.fullname" . }}, {{ include "philotes-worker.keda.min" . }}..{{ include "philotes-worker.num" .Values.keda.maxReplicas }} replicas.
  kubectl -n {{ .Release.Namespace }} get scaledobject,hpa -l app.kubernetes.io/instance={{ .Release.Name }}
{{- if include "philotes-worker.keda.reachesZero" . }}
  Scale to zero: on. {{ if .Values.keda.postgresql.enabled }}The PostgreSQL trigger (unconfirmed WAL of slot {{ .Values.worker.slot }}) {{ $act := include "philotes-worker.num" .Values.keda.postgresql.activationTargetQueryValue }}{{ if eq $act "0" }}wakes the worker on the first change.{{ else }}wakes the worker once it exceeds {{ $act }} bytes.{{ end }}{{ else }}Make sure your extra or overridden triggers can turn active while no worker pod runs.{{ end }}
{{- end }}
{{- if .Values.keda.fallback.enabled }}
  Fallback: {{ include "philotes-worker.num" .Values.keda.fallback.replicas }} replicas after {{ include "philotes-worker.num" .Values.keda.fallback.failureThreshold }} failed polls.
{{- end }}
{{- else if .Values.autoscaling.enabled }}

Autoscaling: HorizontalPodAutoscaler {{ include "philotes-worker.fullname" . }}, {{ include "philotes-worker.num" .Values.autoscaling.minReplicas }}..{{ include "philotes-worker.num" .Values.autoscaling.maxReplicas }} replicas.
{{- end }}
{{- if .Values.keda.scaledJob.enabled }}

Drain jobs: KEDA ScaledJob {{ include "philotes-worker.fullname" . }}-drain runs `philotes-worker drain`, up to {{ include "philotes-worker.num" .Values.keda.scaledJob.maxReplicaCount }} at once.
{{- end }}
{{- if .Values.backfillJob.enabled }}
{{- $job := include "philotes-worker.backfillJobName" . }}

Backfill: Job {{ $job }} runs `philotes-worker backfill --tables {{ join "," .Values.backfillJob.tables }}`;
the Deployment's replicas write the rows to the lake.
  kubectl -n {{ .Release.Namespace }} logs -f job/{{ $job }}
  Once it has completed, set backfillJob.enabled=false (Helm deletes the Job); change backfillJob.id to run another.
{{- end }}
{{- if and (eq (include "philotes-worker.backfillMode" .) "auto") (eq (include "philotes-worker.num" .Values.worker.backfill.workers) "0") (not .Values.worker.noReader) }}

WARNING: worker.backfill.mode is auto but worker.backfill.workers is 0: the reader registers every new table for a
         backfill, but no replica reads its chunks, so those backfills never finish and
         philotes_backfill_rows_remaining stays above 0. Set worker.backfill.workers to 1 or more, or
         worker.backfill.mode to "off".
{{- end }}
{{- end }}
