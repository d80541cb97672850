{{/*
Value helpers: numbers as plain decimal text, "is this key set", and the small derived values the templates and
the checks in validate.yaml share (backfill mode, source name, S3 warehouse and path style, why several pods run).
*/}}

{{/*
A number as plain decimal text. Values from YAML files arrive as float64 and would print as 1e+06; --set values
arrive as int64; strings pass through. Usage: include "philotes-worker.num" .Values.some.number
*/}}
{{- define "philotes-worker.num" -}}
{{- $v := . }}
{{- if kindIs "float64" $v }}
{{- if eq $v (floor $v) }}
{{- printf "%d" (int64 $v) }}
{{- else }}
{{- printf "%v" $v }}
{{- end }}
{{- else }}
{{- printf "%v" $v }}
{{- end }}
{{- end }}

{{/*
"true" when key k of map m is present and not null (0 and false count as set). Usage:
include "philotes-worker.isSet" (list .Values.keda "minReplicaCount")
*/}}
{{- define "philotes-worker.isSet" -}}
{{- $m := index . 0 }}{{- $k := index . 1 }}
{{- if and (hasKey $m $k) (not (kindIs "invalid" (index $m $k))) }}true{{- end }}
{{- end }}

{{- define "philotes-worker.sourceName" -}}
{{- default .Values.worker.slot .Values.worker.sourceName }}
{{- end }}

{{/*
PHILOTES_BACKFILL: auto or off. An unquoted `off` in a values file arrives as false (YAML 1.1) and means off.
*/}}
{{- define "philotes-worker.backfillMode" -}}
{{- $m := .Values.worker.backfill.mode }}
{{- if or (kindIs "bool" $m) (eq (toString $m) "off") }}off{{ else }}{{ $m }}{{ end }}
{{- end }}

{{/*
"true" when the warehouse is on object storage (s3:// or s3a://).
*/}}
{{- define "philotes-worker.s3Warehouse" -}}
{{- $w := toString .Values.worker.iceberg.warehouse }}
{{- if or (hasPrefix "s3://" $w) (hasPrefix "s3a://" $w) }}true{{- end }}
{{- end }}

{{/*
PHILOTES_S3_PATH_STYLE: auto, true or false (the value is a boolean or the string "auto").
*/}}
{{- define "philotes-worker.s3PathStyle" -}}
{{- $p := .Values.worker.iceberg.s3.pathStyle }}
{{- if kindIs "bool" $p }}{{ printf "%t" $p }}{{ else }}{{ toString $p }}{{ end }}
{{- end }}

{{/*
Why the release runs (or may run) more than one worker pod at a time, as a comma-separated list of the values
responsible; empty for a single fixed pod. A file:// warehouse on a per-pod volume loses data in any of these.
*/}}
{{- define "philotes-worker.multiPodReasons" -}}
{{- $v := .Values }}
{{- $r := list }}
{{- $reps := include "philotes-worker.num" $v.replicaCount | int64 }}
{{- $autoscaled := or $v.keda.enabled $v.autoscaling.enabled }}
{{- if and (not $autoscaled) (gt $reps 1) }}{{ $r = append $r (printf "replicaCount: %d" $reps) }}{{ end }}
{{- if $v.keda.enabled }}{{ $r = append $r "keda.enabled" }}{{ end }}
{{- if $v.keda.scaledJob.enabled }}{{ $r = append $r "keda.scaledJob.enabled" }}{{ end }}
{{- if $v.autoscaling.enabled }}{{ $r = append $r "autoscaling.enabled" }}{{ end }}
{{- if and $v.backfillJob.enabled (or $autoscaled (gt $reps 0)) }}{{ $r = append $r "backfillJob.enabled next to the Deployment's pods" }}{{ end }}
{{- join ", " $r }}
{{- end }}
