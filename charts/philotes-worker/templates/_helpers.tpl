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
Name of the backfill Job: <fullname>-backfill-<id>, with the full name shortened so that the id always survives
within 63 characters (the Job controller puts the name in a label).
*/}}
{{- define "philotes-worker.backfillJobName" -}}
{{- $suffix := printf "-backfill-%s" (include "philotes-worker.num" .Values.backfillJob.id) }}
{{- printf "%s%s" (include "philotes-worker.fullname" . | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/*
Pod template metadata of the chart's Jobs (the ScaledJob's drain jobs, the backfill Job). Its name label differs
from the Deployment's selector, so the Service, the PodDisruptionBudget and the monitors never select job pods.
Usage: include "philotes-worker.jobPodMetadata" (dict "ctx" $ "component" "drain")
*/}}
{{- define "philotes-worker.jobPodMetadata" -}}
{{- $ctx := .ctx -}}
labels:
  app.kubernetes.io/name: {{ include "philotes-worker.name" $ctx }}-{{ .component }}
  app.kubernetes.io/instance: {{ $ctx.Release.Name }}
  app.kubernetes.io/component: {{ .component }}
  app.kubernetes.io/part-of: philotes
  {{- with $ctx.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $ctx.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

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

{{/*
Effective KEDA minimum: keda.minReplicaCount when set (0 included), else keda.minReplicas.
*/}}
{{- define "philotes-worker.keda.min" -}}
{{- if include "philotes-worker.isSet" (list .Values.keda "minReplicaCount") }}
{{- include "philotes-worker.num" .Values.keda.minReplicaCount }}
{{- else }}
{{- include "philotes-worker.num" .Values.keda.minReplicas }}
{{- end }}
{{- end }}

{{/*
"true" when the ScaledObject can take the Deployment to zero replicas (minimum 0, or idle mode at 0).
*/}}
{{- define "philotes-worker.keda.reachesZero" -}}
{{- $min := include "philotes-worker.keda.min" . | int64 }}
{{- $idle := include "philotes-worker.isSet" (list .Values.keda "idleReplicaCount") }}
{{- if or (eq $min 0) (and $idle (eq (include "philotes-worker.num" .Values.keda.idleReplicaCount | int64) 0)) }}true{{- end }}
{{- end }}

{{/*
"true" when some trigger can turn active while no worker pod runs: the PostgreSQL trigger, an extra trigger, or a
Prometheus trigger whose query was overridden (it may read something other than the worker's own metrics).
*/}}
{{- define "philotes-worker.keda.canWake" -}}
{{- $k := .Values.keda }}
{{- $custom := false }}
{{- if $k.prometheus.enabled }}
{{- range $t := list $k.prometheus.lagTrigger $k.prometheus.bufferTrigger $k.prometheus.backfillTrigger $k.prometheus.throughputTrigger }}
{{- if and $t.enabled $t.query }}{{ $custom = true }}{{ end }}
{{- end }}
{{- end }}
{{- if or $k.postgresql.enabled (gt (len $k.extraTriggers) 0) $custom }}true{{- end }}
{{- end }}

{{/*
The label matchers that scope PromQL to this release, comma-separated, without braces. The one definition of the
release's scope (keda.prometheus.scope) for the KEDA triggers' default queries, the Grafana dashboard and the alert
rules. Usage:
  include "philotes-worker.promMatchers" (dict "ctx" $ "namespace" .Release.Namespace "jobs" false "keda" false)
namespace: the value the namespace label must equal: the release namespace, or "$namespace" (the dashboard's
  variable).
jobs: true widens the default pod regex from the Deployment's pods (<fullname>-<replicaset>-<pod>, what the triggers
  read) to every pod of the release that runs the worker: the drain jobs' (<fullname>-drain-<job>-<pod>) and the
  backfill Job's (<fullname>-backfill-<id>-<pod>) too. A podRegex set by the user is used as it is.
keda: true scopes KEDA's own metrics (keda_*) instead: their namespace label (scope.kedaNamespaceLabel) and this
  release's ScaledObject and ScaledJob names in the scaledObject label (KEDA puts both kinds' names there).
*/}}
{{- define "philotes-worker.promMatchers" -}}
{{- $ctx := .ctx }}
{{- $s := $ctx.Values.keda.prometheus.scope }}
{{- $fullname := include "philotes-worker.fullname" $ctx }}
{{- $m := list }}
{{- if .keda }}
{{- if $s.kedaNamespaceLabel }}
{{- $m = append $m (printf "%s=%q" $s.kedaNamespaceLabel .namespace) }}
{{- end }}
{{- $m = append $m (printf "scaledObject=~%q" (printf "%s|%s-drain" $fullname $fullname)) }}
{{- else }}
{{- if $s.namespaceLabel }}
{{- $m = append $m (printf "%s=%q" $s.namespaceLabel .namespace) }}
{{- end }}
{{- if $s.podLabel }}
{{- $pods := "[a-z0-9]+" }}
{{- if .jobs }}{{ $pods = "([a-z0-9]+|drain-[a-z0-9]+|backfill-[a-z0-9-]+)" }}{{ end }}
{{- $re := default (printf "%s-%s-[a-z0-9]+" $fullname $pods) $s.podRegex }}
{{- $m = append $m (printf "%s=~%q" $s.podLabel $re) }}
{{- end }}
{{- end }}
{{- if $s.extraMatchers }}
{{- $m = append $m $s.extraMatchers }}
{{- end }}
{{- join "," $m }}
{{- end }}

{{/*
A PromQL selector of this release: the matchers of philotes-worker.promMatchers plus any given, in braces.
Usage: include "philotes-worker.promSelector" (dict "ctx" $ "namespace" .Release.Namespace "jobs" true "extra" (list `status="lost"`))
*/}}
{{- define "philotes-worker.promSelector" -}}
{{- $m := include "philotes-worker.promMatchers" . }}
{{- printf "{%s}" (join "," (compact (concat (list $m) (.extra | default list)))) }}
{{- end }}

{{/*
The query of a Prometheus trigger: the override rendered with tpl, or the default built from metricName.
Usage: include "philotes-worker.keda.promQuery" (dict "ctx" $ "trigger" $t "kind" "lag|buffer|backfill|throughput")
*/}}
{{- define "philotes-worker.keda.promQuery" -}}
{{- $t := .trigger }}
{{- if $t.query }}
{{- tpl $t.query .ctx }}
{{- else }}
{{- $sel := include "philotes-worker.promSelector" (dict "ctx" .ctx "namespace" .ctx.Release.Namespace) }}
{{- if eq .kind "throughput" }}
{{- printf "sum(rate(%s%s[%s]))" $t.metricName $sel $t.rateWindow }}
{{- else }}
{{- printf "max(%s%s)" $t.metricName $sel }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Metadata of a Prometheus trigger (a YAML map of strings). "fallback" true makes ignoreNullValues default to "false".
Usage: include "philotes-worker.keda.promMetadata" (dict "ctx" $ "trigger" $t "kind" "lag" "fallback" true)
*/}}
{{- define "philotes-worker.keda.promMetadata" -}}
{{- $ctx := .ctx }}
{{- $p := $ctx.Values.keda.prometheus }}
{{- $t := .trigger }}
{{- $md := dict "serverAddress" $p.serverAddress "query" (include "philotes-worker.keda.promQuery" .) "threshold" (include "philotes-worker.num" $t.threshold) }}
{{- if include "philotes-worker.isSet" (list $t "activationThreshold") }}
{{- $_ := set $md "activationThreshold" (include "philotes-worker.num" $t.activationThreshold) }}
{{- end }}
{{- if include "philotes-worker.isSet" (list $p "ignoreNullValues") }}
{{- $_ := set $md "ignoreNullValues" (printf "%t" $p.ignoreNullValues) }}
{{- else if .fallback }}
{{- $_ := set $md "ignoreNullValues" "false" }}
{{- end }}
{{- if $p.unsafeSsl }}
{{- $_ := set $md "unsafeSsl" "true" }}
{{- end }}
{{- if $p.timeout }}
{{- $_ := set $md "timeout" (include "philotes-worker.num" $p.timeout) }}
{{- end }}
{{- if $p.namespace }}
{{- $_ := set $md "namespace" $p.namespace }}
{{- end }}
{{- if $p.customHeaders }}
{{- $h := list }}
{{- range $k := keys $p.customHeaders | sortAlpha }}
{{- $h = append $h (printf "%s=%s" $k (index $p.customHeaders $k | toString)) }}
{{- end }}
{{- $_ := set $md "customHeaders" (join "," $h) }}
{{- end }}
{{- if $p.authentication.modes }}
{{- $_ := set $md "authModes" (join "," $p.authentication.modes) }}
{{- end }}
{{- toYaml $md }}
{{- end }}

{{/*
One KEDA trigger, as a list item. The single place that renders a trigger for the ScaledObject and the ScaledJob.
Usage: include "philotes-worker.keda.trigger" (dict "type" "prometheus" "name" "lag" "metadata" $md
         "authenticationRef" "name-or-empty" "metricType" "type-or-empty")
*/}}
{{- define "philotes-worker.keda.trigger" -}}
- type: {{ .type }}
  name: {{ .name }}
  {{- with .metricType }}
  metricType: {{ . }}
  {{- end }}
  metadata:
    {{- range $k := keys .metadata | sortAlpha }}
    {{ $k }}: {{ index $.metadata $k | toString | quote }}
    {{- end }}
  {{- with .authenticationRef }}
  authenticationRef:
    name: {{ . }}
  {{- end }}
{{- end }}

{{/*
The chart's Prometheus triggers for the Deployment (backfill, buffer, lag, throughput: the dict's key order), as
YAML list items. The ScaledJob renders only the buffer trigger: its drain jobs do not backfill.
*/}}
{{- define "philotes-worker.keda.prometheusTriggers" -}}
{{- $k := .Values.keda }}
{{- $auth := "" }}
{{- if $k.prometheus.authentication.modes }}
{{- $auth = printf "%s-keda-prometheus" (include "philotes-worker.fullname" .) }}
{{- end }}
{{- if $k.prometheus.enabled }}
{{- range $kind, $t := dict "lag" $k.prometheus.lagTrigger "buffer" $k.prometheus.bufferTrigger "backfill" $k.prometheus.backfillTrigger "throughput" $k.prometheus.throughputTrigger }}
{{- if $t.enabled }}
{{- $md := include "philotes-worker.keda.promMetadata" (dict "ctx" $ "trigger" $t "kind" $kind "fallback" $k.fallback.enabled) | fromYaml }}
{{ include "philotes-worker.keda.trigger" (dict "type" "prometheus" "name" $kind "metadata" $md "authenticationRef" $auth "metricType" "") }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The default PostgreSQL query: bytes of WAL the configured slot has not confirmed (worker contract). A slot that
does not exist yet (or has never confirmed) reads as targetQueryValue: one replica wakes and creates it.
*/}}
{{- define "philotes-worker.keda.pgQuery" -}}
{{- $pg := .Values.keda.postgresql }}
{{- if $pg.query }}
{{- tpl $pg.query . }}
{{- else }}
{{- printf "SELECT COALESCE((SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = '%s'), %s)" (.Values.worker.slot | replace "'" "''") (include "philotes-worker.num" $pg.targetQueryValue) }}
{{- end }}
{{- end }}

{{/*
All ScaledObject triggers, as YAML list items, in a fixed order.
*/}}
{{- define "philotes-worker.keda.triggers" -}}
{{- $k := .Values.keda }}
{{- $fullname := include "philotes-worker.fullname" . }}
{{- include "philotes-worker.keda.prometheusTriggers" . }}
{{- if $k.postgresql.enabled }}
{{- $pg := $k.postgresql }}
{{- $md := dict "host" $pg.host "port" (include "philotes-worker.num" $pg.port) "dbName" $pg.database "userName" $pg.user "sslmode" $pg.sslMode "query" (include "philotes-worker.keda.pgQuery" .) "targetQueryValue" (include "philotes-worker.num" $pg.targetQueryValue) }}
{{- if include "philotes-worker.isSet" (list $pg "activationTargetQueryValue") }}
{{- $_ := set $md "activationTargetQueryValue" (include "philotes-worker.num" $pg.activationTargetQueryValue) }}
{{- end }}
{{ include "philotes-worker.keda.trigger" (dict "type" "postgresql" "name" "postgresql" "metadata" $md "authenticationRef" (printf "%s-keda-postgres" $fullname) "metricType" "") }}
{{- end }}
{{- range $r := list "cpu" "memory" }}
{{- $c := index $k $r }}
{{- if $c.enabled }}
{{ include "philotes-worker.keda.trigger" (dict "type" $r "name" $r "metadata" (dict "value" (include "philotes-worker.num" $c.value)) "authenticationRef" "" "metricType" $c.metricType) }}
{{- end }}
{{- end }}
{{- with $k.extraTriggers }}
{{ toYaml . }}
{{- end }}
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

{{/*
The data volume's source: dataVolume, with the default emptyDir dropped when another source is set (values merge
the default `emptyDir: {}` into a user's persistentVolumeClaim), and an emptyDir capped at dataVolumeSizeLimit
unless it sets its own sizeLimit.
*/}}
{{- define "philotes-worker.dataVolumeSource" -}}
{{- $dv := deepCopy (.Values.dataVolume | default dict) }}
{{- if gt (len (omit $dv "emptyDir")) 0 }}
{{- $dv = omit $dv "emptyDir" }}
{{- else }}
{{- $ed := get $dv "emptyDir" | default dict }}
{{- if not (get $ed "sizeLimit") }}
{{- $_ := set $ed "sizeLimit" .Values.dataVolumeSizeLimit }}
{{- end }}
{{- $_ := set $dv "emptyDir" $ed }}
{{- end }}
{{- toYaml $dv }}
{{- end }}

{{/*
Render-time checks of combinations KEDA or Kubernetes would reject, that could never work, or that lose data. Each
message names the value, why, and the fix. Included by the Deployment, which always renders.
*/}}
{{- define "philotes-worker.validate" -}}
{{- $v := .Values }}
{{- $k := $v.keda }}
{{- /* The database URLs reach the worker only through the Secret: without a source URL the reader cannot start (and
a replica without a reader needs the buffer URL instead), so the pods would crash-loop on exit 2. */}}
{{- $db := $v.database }}
{{- if and (not $db.existingSecret) (not $db.sourceUrl) (not (and $v.worker.noReader $db.bufferUrl)) }}
{{- fail (printf "database.sourceUrl is empty and database.existingSecret is not set: the worker needs the source database's URL (PHILOTES_SOURCE_URL; its user needs the REPLICATION attribute). Set database.sourceUrl (e.g. postgres://replicator:secret@db:5432/app?sslmode=require; database.bufferUrl for a separate buffer database), or database.existingSecret naming a Secret with the key %s (and optionally %s). Only a release without a reader (worker.noReader: true) can do without it, and then needs database.bufferUrl." $db.sourceUrlKey $db.bufferUrlKey) }}
{{- end }}
{{- if le (int64 (include "philotes-worker.num" $v.terminationGracePeriodSeconds)) (int64 (include "philotes-worker.num" $v.worker.shutdownTimeoutSeconds)) }}
{{- fail (printf "terminationGracePeriodSeconds (%s) must be greater than worker.shutdownTimeoutSeconds (%s): the pod would be killed before in-flight batches are rolled back. Raise terminationGracePeriodSeconds or lower worker.shutdownTimeoutSeconds." (include "philotes-worker.num" $v.terminationGracePeriodSeconds) (include "philotes-worker.num" $v.worker.shutdownTimeoutSeconds)) }}
{{- end }}
{{- if and (include "philotes-worker.isSet" (list $v.podDisruptionBudget "minAvailable")) (include "philotes-worker.isSet" (list $v.podDisruptionBudget "maxUnavailable")) }}
{{- fail "podDisruptionBudget: set only one of minAvailable and maxUnavailable (set the other to null)." }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled $v.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are both true: every pod would be scraped twice. Enable only one." }}
{{- end }}
{{- if and $v.autoscaling.enabled (not $k.enabled) }}
{{- if not (or (include "philotes-worker.isSet" (list $v.autoscaling "targetCPUUtilizationPercentage")) (include "philotes-worker.isSet" (list $v.autoscaling "targetMemoryUtilizationPercentage"))) }}
{{- fail "autoscaling.enabled is true but no metric is set: set autoscaling.targetCPUUtilizationPercentage and/or autoscaling.targetMemoryUtilizationPercentage." }}
{{- end }}
{{- if gt (int64 (include "philotes-worker.num" $v.autoscaling.minReplicas)) (int64 (include "philotes-worker.num" $v.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%s) is greater than autoscaling.maxReplicas (%s): lower the minimum or raise the maximum." (include "philotes-worker.num" $v.autoscaling.minReplicas) (include "philotes-worker.num" $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}
{{- if or $k.enabled $k.scaledJob.enabled }}
{{- if and $k.prometheus.enabled (has "bearer" $k.prometheus.authentication.modes) (has "basic" $k.prometheus.authentication.modes) }}
{{- fail "keda.prometheus.authentication.modes: bearer and basic are exclusive in KEDA; keep one." }}
{{- end }}
{{- if and $k.prometheus.enabled $k.prometheus.authentication.modes (not $k.prometheus.authentication.existingSecret) }}
{{- fail "keda.prometheus.authentication.modes is set but keda.prometheus.authentication.existingSecret is empty: name the Secret that holds the Prometheus credentials." }}
{{- end }}
{{- end }}
{{- if $k.enabled }}
{{- /* philotes_cdc_lag_seconds includes up to one commit interval (the committer makes written files visible once
per interval), so a lag threshold at or below the interval reads steady traffic as a backlog. */}}
{{- $lag := $k.prometheus.lagTrigger }}
{{- if and $k.prometheus.enabled $lag.enabled }}
{{- $interval := include "philotes-worker.num" $v.worker.iceberg.commitIntervalSeconds }}
{{- $act := "0" }}
{{- $actShown := "unset, KEDA's default 0" }}
{{- if include "philotes-worker.isSet" (list $lag "activationThreshold") }}
{{- $act = include "philotes-worker.num" $lag.activationThreshold }}
{{- $actShown = $act }}
{{- end }}
{{- $thr := include "philotes-worker.num" $lag.threshold }}
{{- $checks := list (list "activationThreshold" $act $actShown "the release would never look idle while changes flow, so it would not scale to zero or to idleReplicaCount") (list "threshold" $thr $thr "the HPA would read steady traffic as a backlog and keep the release scaled out") }}
{{- range $c := $checks }}
{{- if le (float64 (index $c 1)) (float64 $interval) }}
{{- fail (printf "keda.prometheus.lagTrigger.%s (%s) must be greater than worker.iceberg.commitIntervalSeconds (%s): philotes_cdc_lag_seconds counts until a change is visible in Iceberg, so it includes up to one commit interval (under steady load it climbs to about %s s before every commit), and %s. Set keda.prometheus.lagTrigger.%s to several commit intervals (the defaults are threshold 300 and activationThreshold 60 for the default 10 s interval) or lower worker.iceberg.commitIntervalSeconds." (index $c 0) (index $c 2) $interval $interval (index $c 3) (index $c 0)) }}
{{- end }}
{{- end }}
{{- end }}
{{- $min := include "philotes-worker.keda.min" . | int64 }}
{{- $max := include "philotes-worker.num" $k.maxReplicas | int64 }}
{{- $minName := ternary "keda.minReplicaCount" "keda.minReplicas" (eq (include "philotes-worker.isSet" (list $k "minReplicaCount")) "true") }}
{{- if gt $min $max }}
{{- fail (printf "%s (%d) is greater than keda.maxReplicas (%d): KEDA rejects the ScaledObject. Lower the minimum or raise keda.maxReplicas." $minName $min $max) }}
{{- end }}
{{- if include "philotes-worker.isSet" (list $k "idleReplicaCount") }}
{{- $idle := include "philotes-worker.num" $k.idleReplicaCount | int64 }}
{{- if ge $idle $min }}
{{- fail (printf "keda.idleReplicaCount (%d) must be less than %s (%d): KEDA rejects idle >= min. For plain scale to zero set keda.minReplicaCount: 0 and leave keda.idleReplicaCount null; for idle mode raise the minimum above the idle count." $idle $minName $min) }}
{{- end }}
{{- end }}
{{- if $k.postgresql.enabled }}
{{- range $f := list "host" "database" "user" }}
{{- if not (index $k.postgresql $f) }}
{{- fail (printf "keda.postgresql.enabled is true but keda.postgresql.%s is empty: set it to the source database's %s." $f $f) }}
{{- end }}
{{- end }}
{{- if and (not $k.postgresql.existingSecret) (eq (toString $k.postgresql.password) "") }}
{{- fail "keda.postgresql.enabled is true but neither keda.postgresql.password nor keda.postgresql.existingSecret is set: give the password, or the name of a Secret holding it (key keda.postgresql.passwordKey)." }}
{{- end }}
{{- end }}
{{- $triggers := include "philotes-worker.keda.triggers" . | fromYamlArray }}
{{- if eq (len $triggers) 0 }}
{{- fail "keda.enabled is true but no trigger is enabled (KEDA rejects an empty trigger list): enable keda.prometheus with lagTrigger/bufferTrigger/backfillTrigger/throughputTrigger, keda.postgresql, keda.cpu or keda.memory, or add keda.extraTriggers." }}
{{- end }}
{{- $other := 0 }}
{{- range $t := $triggers }}
{{- if not (has (get $t "type") (list "cpu" "memory")) }}{{ $other = add1 $other }}{{ end }}
{{- end }}
{{- if and (eq $min 0) (eq $other 0) }}
{{- fail (printf "%s is 0 but only cpu/memory triggers are enabled: KEDA cannot scale to zero on cpu/memory. Enable keda.postgresql (it wakes the worker at zero replicas) or set the minimum to 1 or more." $minName) }}
{{- end }}
{{- if and $k.fallback.enabled (eq $other 0) }}
{{- fail "keda.fallback.enabled needs at least one trigger that is not cpu or memory: enable a keda.prometheus trigger or keda.postgresql, or disable keda.fallback." }}
{{- end }}
{{- if and $k.cpu.enabled (not (and $v.resources.requests $v.resources.requests.cpu)) }}
{{- fail "keda.cpu.enabled needs resources.requests.cpu: utilization is measured against the request." }}
{{- end }}
{{- if and $k.memory.enabled (not (and $v.resources.requests $v.resources.requests.memory)) }}
{{- fail "keda.memory.enabled needs resources.requests.memory: utilization is measured against the request." }}
{{- end }}
{{- if and $k.scalingModifiers.formula (not $k.scalingModifiers.target) }}
{{- fail "keda.scalingModifiers.formula is set but keda.scalingModifiers.target is empty: give the target value of the formula." }}
{{- end }}
{{- if $k.scalingModifiers.formula }}
{{- range $i, $t := $k.extraTriggers }}
{{- if not $t.name }}
{{- fail (printf "keda.scalingModifiers.formula refers to triggers by name, but keda.extraTriggers[%d] has no name: give it a name (and use it in the formula)." $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $k.scaledJob.enabled }}
{{- $j := $k.scaledJob }}
{{- if include "philotes-worker.isSet" (list $j "minReplicaCount") }}
{{- $jmin := include "philotes-worker.num" $j.minReplicaCount | int64 }}
{{- $jmax := include "philotes-worker.num" $j.maxReplicaCount | int64 }}
{{- if gt $jmin $jmax }}
{{- fail (printf "keda.scaledJob.minReplicaCount (%d) is greater than keda.scaledJob.maxReplicaCount (%d): KEDA rejects the ScaledJob. Lower the minimum or raise keda.scaledJob.maxReplicaCount." $jmin $jmax) }}
{{- end }}
{{- end }}
{{- if not (or (and $k.prometheus.enabled $k.prometheus.bufferTrigger.enabled) $k.scaledJob.extraTriggers) }}
{{- fail "keda.scaledJob.enabled needs a trigger: enable keda.prometheus and keda.prometheus.bufferTrigger (buffer depth), or set keda.scaledJob.extraTriggers." }}
{{- end }}
{{- end }}
{{- if $v.backfillJob.enabled }}
{{- if not $v.backfillJob.tables }}
{{- fail "backfillJob.enabled is true but backfillJob.tables is empty: list the tables to backfill as schema.table, e.g. backfillJob.tables: [public.orders], or set backfillJob.enabled to false." }}
{{- end }}
{{- if not (or $v.database.existingSecret $v.database.sourceUrl) }}
{{- fail "backfillJob.enabled needs the source database: set database.sourceUrl, or database.existingSecret with the key database.sourceUrlKey (philotes-worker backfill reads the tables from the source)." }}
{{- end }}
{{- end }}
{{- /* Where the lake lives. A file:// warehouse on a volume the pods do not share splits the lake between pods, and
a deleted pod takes its files while the catalog (in the buffer database) still lists them. */}}
{{- $ice := $v.worker.iceberg }}
{{- $wh := toString $ice.warehouse }}
{{- if and $v.dataVolumeShared (not (get ($v.dataVolume | default dict) "persistentVolumeClaim")) }}
{{- fail "dataVolumeShared is true but dataVolume has no persistentVolumeClaim: only a ReadWriteMany persistentVolumeClaim that every pod mounts is shared, an emptyDir (the default) or any other volume source is per pod. Set dataVolume: {persistentVolumeClaim: {claimName: <a ReadWriteMany claim>}}, or set dataVolumeShared to false and use an object store (worker.iceberg.warehouse: s3://bucket/prefix with worker.iceberg.s3.*)." }}
{{- end }}
{{- if hasPrefix "file://" $wh }}
{{- $many := include "philotes-worker.multiPodReasons" . }}
{{- if and $many (not $v.dataVolumeShared) }}
{{- fail (printf "worker.iceberg.warehouse is %s on a per-pod volume (dataVolumeShared is false), but the release runs more than one pod (%s): each pod would write its own lake and a deleted pod deletes its files while the catalog still lists them. Use an object store (worker.iceberg.warehouse: s3://bucket/prefix with worker.iceberg.s3.*), or a ReadWriteMany persistentVolumeClaim as dataVolume with dataVolumeShared: true." $wh $many) }}
{{- end }}
{{- end }}
{{- $s3 := $ice.s3 }}
{{- if not (include "philotes-worker.s3Warehouse" .) }}
{{- $set := list }}
{{- range $k := list "endpoint" "region" "existingSecret" "sessionTokenKey" }}
{{- if index $s3 $k }}{{ $set = append $set (printf "worker.iceberg.s3.%s" $k) }}{{ end }}
{{- end }}
{{- if ne (include "philotes-worker.s3PathStyle" .) "auto" }}{{ $set = append $set "worker.iceberg.s3.pathStyle" }}{{ end }}
{{- if $set }}
{{- fail (printf "%s set but worker.iceberg.warehouse is %s, not s3:// or s3a://: the S3 settings apply only to an object-store warehouse and would be ignored. Set worker.iceberg.warehouse to s3://bucket/prefix, or remove %s." (join ", " $set) $wh (join ", " $set)) }}
{{- end }}
{{- end }}
{{- if and $s3.sessionTokenKey (not $s3.existingSecret) }}
{{- fail "worker.iceberg.s3.sessionTokenKey is set but worker.iceberg.s3.existingSecret is empty: the session token is read from that Secret, next to the access keys. Name the Secret in worker.iceberg.s3.existingSecret, or leave worker.iceberg.s3.sessionTokenKey empty (without static keys the AWS SDK default chain, e.g. IRSA, supplies temporary credentials itself)." }}
{{- end }}
{{- if and $ice.catalogWarehouse (not $ice.catalogUri) }}
{{- fail (printf "worker.iceberg.catalogWarehouse (%s) is set but worker.iceberg.catalogUri is empty: the warehouse name is sent only to a REST catalog, and the SQL catalog in the buffer database has no named warehouses. Set worker.iceberg.catalogUri to the REST catalog (e.g. http://lakekeeper:8181/catalog), or leave worker.iceberg.catalogWarehouse empty." $ice.catalogWarehouse) }}
{{- end }}
{{- if and $v.keda.enabled (include "philotes-worker.keda.reachesZero" .) (not (include "philotes-worker.keda.canWake" .)) }}
{{- fail "keda: this release can scale to zero (keda.minReplicaCount or keda.idleReplicaCount is 0) but no trigger can wake it: at zero replicas the worker's own Prometheus metrics do not exist, so the Prometheus triggers stay inactive while changes pile up in the replication slot. Enable keda.postgresql (it reads the slot's unconfirmed WAL on the source database and works at zero replicas), add a keda.extraTriggers entry that works without worker pods, or set keda.minReplicaCount to 1 or more." }}
{{- end }}
{{- end }}

{{/*
Pod spec shared by the Deployment, the ScaledJob and the backfill Job.
Usage: include "philotes-worker.podSpec" (dict "ctx" $ "args" (list "run") "probes" true)
*/}}
{{- define "philotes-worker.podSpec" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
serviceAccountName: {{ include "philotes-worker.serviceAccountName" $ctx }}
automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
terminationGracePeriodSeconds: {{ include "philotes-worker.num" $v.terminationGracePeriodSeconds }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: worker
    image: {{ include "philotes-worker.image" $ctx | quote }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    {{- /* The worker writes nothing to /dev/termination-log: on a failure the last log lines (e.g. why it exited
    with status 2) become the termination message that `kubectl describe pod` shows. */}}
    terminationMessagePolicy: FallbackToLogsOnError
    args:
      {{- toYaml .args | nindent 6 }}
    ports:
      - name: http-metrics
        containerPort: {{ include "philotes-worker.num" $v.worker.httpPort }}
        protocol: TCP
    envFrom:
      - configMapRef:
          name: {{ include "philotes-worker.fullname" $ctx }}
      {{- with $v.worker.extraEnvFrom }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    env:
      - name: PHILOTES_SOURCE_URL
        valueFrom:
          secretKeyRef:
            name: {{ include "philotes-worker.secretName" $ctx }}
            key: {{ $v.database.sourceUrlKey }}
      {{- if or $v.database.existingSecret $v.database.bufferUrl }}
      - name: PHILOTES_BUFFER_URL
        valueFrom:
          secretKeyRef:
            name: {{ include "philotes-worker.secretName" $ctx }}
            key: {{ $v.database.bufferUrlKey }}
            optional: {{ not $v.database.bufferUrl }}
      {{- end }}
      {{- with $v.worker.iceberg.s3 }}
      {{- if .existingSecret }}
      - name: PHILOTES_S3_ACCESS_KEY_ID
        valueFrom:
          secretKeyRef:
            name: {{ .existingSecret }}
            key: {{ .accessKeyIdKey }}
      - name: PHILOTES_S3_SECRET_ACCESS_KEY
        valueFrom:
          secretKeyRef:
            name: {{ .existingSecret }}
            key: {{ .secretAccessKeyKey }}
      {{- if .sessionTokenKey }}
      - name: PHILOTES_S3_SESSION_TOKEN
        valueFrom:
          secretKeyRef:
            name: {{ .existingSecret }}
            key: {{ .sessionTokenKey }}
      {{- end }}
      {{- end }}
      {{- end }}
      {{- with $v.worker.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- if .probes }}
    readinessProbe:
      httpGet:
        path: /readyz
        port: http-metrics
      {{- toYaml $v.probes.readiness | nindent 6 }}
    livenessProbe:
      httpGet:
        path: /healthz
        port: http-metrics
      {{- toYaml $v.probes.liveness | nindent 6 }}
    {{- end }}
    {{- with $v.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $v.securityContext }}
    securityContext:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    volumeMounts:
      - name: data
        mountPath: /var/lib/philotes
      - name: tmp
        mountPath: /tmp
volumes:
  - name: data
    {{- include "philotes-worker.dataVolumeSource" $ctx | nindent 4 }}
  - name: tmp
    emptyDir:
      sizeLimit: {{ $v.tmpVolumeSizeLimit | quote }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
