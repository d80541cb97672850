{{/*
The worker pod: the pod spec shared by the Deployment, the ScaledJob and the backfill Job (container, env,
probes, volumes), the data volume's source, and the pod metadata of the chart's Jobs.
*/}}

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
