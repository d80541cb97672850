{{/*
KEDA: the effective replica bounds, whether the release can scale to zero and wake up, the PromQL scope of the
release (shared with the dashboard and the alert rules), and the triggers of the ScaledObject and the ScaledJob.
*/}}

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
The name of the value behind philotes-worker.keda.min, for messages: keda.minReplicaCount when set, else
keda.minReplicas.
*/}}
{{- define "philotes-worker.keda.minName" -}}
{{- ternary "keda.minReplicaCount" "keda.minReplicas" (eq (include "philotes-worker.isSet" (list .Values.keda "minReplicaCount")) "true") }}
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
