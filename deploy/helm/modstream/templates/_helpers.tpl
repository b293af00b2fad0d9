{{/* vim: set filetype=mustache: */}}

{{- define "modstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modstream.fullname" -}}
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

{{- define "modstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "modstream.labels" -}}
helm.sh/chart: {{ include "modstream.chart" . }}
app.kubernetes.io/name: {{ include "modstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modstream
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Pod template labels of the vLLM tiers; call with (dict "ctx" $ "component" "vllm-t1").
No chart version or appVersion: a change of pod template labels restarts the pods, and a
worker-only upgrade must not restart the GPU tiers (minutes of weight loading each).
*/}}
{{- define "modstream.stablePodLabels" -}}
{{ include "modstream.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: modstream
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "worker"). */}}
{{- define "modstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modstream.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "modstream.workerName" -}}
{{- printf "%s-worker" (include "modstream.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the vLLM objects of a tier; call with (dict "ctx" $ "tier" "t1"). */}}
{{- define "modstream.vllmName" -}}
{{- printf "%s-vllm-%s" (include "modstream.fullname" .ctx) .tier | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modstream.serviceAccountName" -}}
{{- if .Values.worker.serviceAccount.create -}}
{{- default (include "modstream.workerName" .) .Values.worker.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.worker.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modstream.workerImage" -}}
{{- $tag := default .Chart.AppVersion .Values.worker.image.tag -}}
{{- printf "%s:%s" .Values.worker.image.repository $tag -}}
{{- end -}}

{{- define "modstream.vllmImage" -}}
{{- printf "%s:%s" .Values.vllm.image.repository .Values.vllm.image.tag -}}
{{- end -}}

{{/* Served model name of a vLLM tier; call with (dict "ctx" $ "tier" "t1"). */}}
{{- define "modstream.servedModelName" -}}
{{- $t := index .ctx.Values.vllm .tier -}}
{{- default $t.model $t.servedModelName -}}
{{- end -}}

{{/* Judge base URLs as a JSON list; call with (dict "ctx" $ "tier" "t1"). */}}
{{- define "modstream.judgeBaseUrls" -}}
{{- $judge := index .ctx.Values.judges .tier -}}
{{- $v := index .ctx.Values.vllm .tier -}}
{{- if $judge.baseUrls -}}
{{- toJson $judge.baseUrls -}}
{{- else if $v.enabled -}}
{{- list (printf "http://%s:%v/v1" (include "modstream.vllmName" .) .ctx.Values.vllm.service.port) | toJson -}}
{{- else -}}
{{- fail (printf "judges.%s.baseUrls is empty and vllm.%s.enabled is false: point the worker at a judge server" .tier .tier) -}}
{{- end -}}
{{- end -}}

{{/* Judge model name; call with (dict "ctx" $ "tier" "t1"). */}}
{{- define "modstream.judgeModel" -}}
{{- $judge := index .ctx.Values.judges .tier -}}
{{- default (include "modstream.servedModelName" .) $judge.model -}}
{{- end -}}

{{/*
Judge in-flight cap per worker; call with (dict "ctx" $ "tier" "t1"). Default: one full
batch per vLLM replica spread over the workers, ceil(maxNumSeqs x vLLM replicas / workers):
vLLM replicas = replicaCount (keda.vllm.minReplicaCount when KEDA scales the tier, the
number of baseUrls for external judges), workers = worker.replicaCount (keda.minReplicaCount
with KEDA).
*/}}
{{- define "modstream.judgeMaxInFlight" -}}
{{- $v := .ctx.Values -}}
{{- $judge := index $v.judges .tier -}}
{{- $t := index $v.vllm .tier -}}
{{- if $judge.maxInFlight -}}
{{- $judge.maxInFlight | int -}}
{{- else -}}
{{- $replicas := int $t.replicaCount -}}
{{- if $judge.baseUrls -}}
{{- $replicas = len $judge.baseUrls -}}
{{- else if and $v.keda.vllm.enabled (or (eq .tier "t1") $v.keda.vllm.t2) -}}
{{- $replicas = int $v.keda.vllm.minReplicaCount -}}
{{- end -}}
{{- $workers := ternary (int $v.keda.minReplicaCount) (int $v.worker.replicaCount) $v.keda.enabled -}}
{{- $replicas = max $replicas 1 -}}
{{- $workers = max $workers 1 -}}
{{- div (sub (add (mul (int $t.maxNumSeqs) $replicas) $workers) 1) $workers -}}
{{- end -}}
{{- end -}}

{{/* Posts in flight per worker: worker.maxInFlight, else both judge caps together (>= 1024, the worker default). */}}
{{- define "modstream.workerMaxInFlight" -}}
{{- if .Values.worker.maxInFlight -}}
{{- .Values.worker.maxInFlight | int -}}
{{- else -}}
{{- $t1 := include "modstream.judgeMaxInFlight" (dict "ctx" . "tier" "t1") | int -}}
{{- $t2 := include "modstream.judgeMaxInFlight" (dict "ctx" . "tier" "t2") | int -}}
{{- max 1024 (add $t1 $t2) -}}
{{- end -}}
{{- end -}}

{{/* Whether the worker mounts a policies directory from ConfigMaps. */}}
{{- define "modstream.hasPolicyConfigMaps" -}}
{{- if or .Values.existingPoliciesConfigMap .Values.policies -}}true{{- end -}}
{{- end -}}

{{/*
librdkafka pass-through (MODSTREAM_KAFKA__EXTRA) as a JSON object, built from
kafka.extra, kafka.sasl and kafka.tls. Secret values are referenced as $(VAR), which
the kubelet expands from env vars defined earlier in the same container.
*/}}
{{- define "modstream.kafkaExtraJson" -}}
{{- $extra := deepCopy (default dict .Values.kafka.extra) -}}
{{- if .Values.kafka.sasl.enabled -}}
{{- $_ := set $extra "security.protocol" .Values.kafka.sasl.securityProtocol -}}
{{- $_ := set $extra "sasl.mechanism" .Values.kafka.sasl.mechanism -}}
{{- $_ := set $extra "sasl.username" "$(KAFKA_SASL_USERNAME)" -}}
{{- $_ := set $extra "sasl.password" "$(KAFKA_SASL_PASSWORD)" -}}
{{- end -}}
{{- if .Values.kafka.tls.caSecret -}}
{{- if not (hasKey $extra "security.protocol") -}}
{{- $_ := set $extra "security.protocol" "SSL" -}}
{{- end -}}
{{- $_ := set $extra "ssl.ca.location" (printf "/etc/modstream/kafka-ca/%s" .Values.kafka.tls.caKey) -}}
{{- end -}}
{{- if .Values.kafka.tls.clientCertSecret -}}
{{- $_ := set $extra "ssl.certificate.location" (printf "/etc/modstream/kafka-client/%s" .Values.kafka.tls.certKey) -}}
{{- $_ := set $extra "ssl.key.location" (printf "/etc/modstream/kafka-client/%s" .Values.kafka.tls.keyKey) -}}
{{- end -}}
{{- if $extra -}}{{- toJson $extra -}}{{- end -}}
{{- end -}}

{{/*
The environment every modstream process shares (worker, sweep, review console, review apply,
appeals): config file, policies directory, Kafka (address, group, credentials) and topics.
Call with the root context; include with nindent.
*/}}
{{- define "modstream.commonEnv" -}}
{{- $kafkaExtra := include "modstream.kafkaExtraJson" . -}}
- name: MODSTREAM_CONFIG_FILE
  value: /etc/modstream/config/config.yaml
{{- if include "modstream.hasPolicyConfigMaps" . }}
- name: MODSTREAM_POLICIES_DIR
  value: /etc/modstream/policies
{{- end }}
- name: MODSTREAM_KAFKA__BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
# The worker's group; the other commands derive their own from it (<group>-sweep-<run>, -review-apply, ...).
- name: MODSTREAM_KAFKA__GROUP_ID
  value: {{ .Values.kafka.groupId | quote }}
{{- if .Values.kafka.extraSecret.name }}
- name: MODSTREAM_KAFKA__EXTRA
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.extraSecret.name }}
      key: {{ .Values.kafka.extraSecret.key }}
{{- else }}
{{- if .Values.kafka.sasl.enabled }}
# Defined before MODSTREAM_KAFKA__EXTRA so that $(...) references expand.
- name: KAFKA_SASL_USERNAME
  {{- if .Values.kafka.sasl.username }}
  value: {{ .Values.kafka.sasl.username | quote }}
  {{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
  {{- end }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if $kafkaExtra }}
- name: MODSTREAM_KAFKA__EXTRA
  value: {{ $kafkaExtra | quote }}
{{- end }}
{{- end }}
- name: MODSTREAM_TOPICS__POSTS
  value: {{ .Values.topics.posts | quote }}
- name: MODSTREAM_TOPICS__ACTIONS
  value: {{ .Values.topics.actions | quote }}
- name: MODSTREAM_TOPICS__AUDIT
  value: {{ .Values.topics.audit | quote }}
- name: MODSTREAM_TOPICS__DLQ
  value: {{ .Values.topics.dlq | quote }}
- name: MODSTREAM_TOPICS__RETRY
  value: {{ .Values.topics.retry | quote }}
- name: MODSTREAM_TOPICS__REVIEW
  value: {{ .Values.topics.review | quote }}
- name: MODSTREAM_TOPICS__REVIEW_DECISIONS
  value: {{ .Values.topics.reviewDecisions | quote }}
- name: MODSTREAM_TOPICS__APPEALS
  value: {{ .Values.topics.appeals | quote }}
{{- end -}}

{{/*
Judge settings of some tiers; call with (dict "ctx" $ "tiers" (list "t1" "t2") "maxInFlight" true).
maxInFlight: also MODSTREAM_JUDGE_<TIER>__MAX_IN_FLIGHT (the worker's share of the servers' batch).
*/}}
{{- define "modstream.judgeEnv" -}}
{{- $ctx := .ctx -}}
{{- $inFlight := .maxInFlight -}}
{{- range $tier := .tiers }}
{{- $judge := index $ctx.Values.judges $tier }}
{{- $TIER := upper $tier }}
- name: MODSTREAM_JUDGE_{{ $TIER }}__BASE_URLS
  value: {{ include "modstream.judgeBaseUrls" (dict "ctx" $ctx "tier" $tier) | quote }}
- name: MODSTREAM_JUDGE_{{ $TIER }}__MODEL
  value: {{ include "modstream.judgeModel" (dict "ctx" $ctx "tier" $tier) | quote }}
- name: MODSTREAM_JUDGE_{{ $TIER }}__REASONING_EFFORT
  value: {{ $judge.reasoningEffort | quote }}
{{- if $inFlight }}
- name: MODSTREAM_JUDGE_{{ $TIER }}__MAX_IN_FLIGHT
  value: {{ include "modstream.judgeMaxInFlight" (dict "ctx" $ctx "tier" $tier) | quote }}
{{- end }}
- name: MODSTREAM_JUDGE_{{ $TIER }}__TIMEOUT_S
  value: {{ $judge.timeoutS | quote }}
# The server's --max-model-len: the client budgets prompt + output within it.
- name: MODSTREAM_JUDGE_{{ $TIER }}__MAX_MODEL_LEN
  value: {{ $judge.maxModelLen | default (index $ctx.Values.vllm $tier).maxModelLen | quote }}
{{- end }}
{{- end -}}

{{/* Read-only root filesystem: HOME and caches on the /tmp emptyDir. */}}
{{- define "modstream.homeEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
{{- end -}}

{{/* Mounts of the shared volumes (modstream.commonVolumes): config, policies, Kafka TLS, /tmp. */}}
{{- define "modstream.commonVolumeMounts" -}}
- name: config
  mountPath: /etc/modstream/config
  readOnly: true
{{- if include "modstream.hasPolicyConfigMaps" . }}
# Mounted as a directory (no subPath) so that ConfigMap edits reach the pod.
- name: policies
  mountPath: /etc/modstream/policies
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/modstream/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client
  mountPath: /etc/modstream/kafka-client
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The volumes behind modstream.commonVolumeMounts. */}}
{{- define "modstream.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "modstream.workerName" . }}-config
{{- if include "modstream.hasPolicyConfigMaps" . }}
- name: policies
  projected:
    sources:
      {{- if .Values.existingPoliciesConfigMap }}
      - configMap:
          name: {{ .Values.existingPoliciesConfigMap }}
      {{- end }}
      {{- if .Values.policies }}
      - configMap:
          name: {{ include "modstream.fullname" . }}-policies
      {{- end }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client
  secret:
    secretName: {{ .Values.kafka.tls.clientCertSecret }}
    defaultMode: 0440
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{- define "modstream.reviewConsoleName" -}}
{{- printf "%s-review-console" (include "modstream.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
