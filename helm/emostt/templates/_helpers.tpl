{{/*
Names and labels (the `helm create` conventions).
*/}}
{{- define "emostt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, plus the chart name unless the release name contains it.
Truncated to 63 characters (DNS label limit).
*/}}
{{- define "emostt.fullname" -}}
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

{{- define "emostt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "emostt.labels" -}}
helm.sh/chart: {{ include "emostt.chart" . }}
{{ include "emostt.selectorLabels" . }}
app.kubernetes.io/version: {{ include "emostt.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: stt-server
app.kubernetes.io/part-of: emostt
{{- end }}

{{- define "emostt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "emostt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "emostt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "emostt.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "emostt.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "emostt.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "emostt.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
The slim image (slim.enabled): the same repository, its own tag or digest; it serves the exported
model dir on the cache volume.
*/}}
{{- define "emostt.slimImage" -}}
{{- if .Values.slim.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.slim.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default (printf "%s-slim" (include "emostt.imageTag" .)) .Values.slim.tag) }}
{{- end }}
{{- end }}

{{- define "emostt.servingImage" -}}
{{- if .Values.slim.enabled }}{{ include "emostt.slimImage" . }}{{ else }}{{ include "emostt.image" . }}{{ end }}
{{- end }}

{{- define "emostt.exportedModelDir" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.cache.mountPath) (trimSuffix "/" .Values.slim.exportedModelPath) }}
{{- end }}

{{/* The cache locations, for the server and the export init container alike. */}}
{{- define "emostt.cacheEnv" -}}
- name: XDG_CACHE_HOME
  value: {{ .Values.cache.mountPath | quote }}
- name: MODELSCOPE_CACHE
  value: {{ printf "%s/modelscope" .Values.cache.mountPath | quote }}
- name: HF_HOME
  value: {{ printf "%s/huggingface" .Values.cache.mountPath | quote }}
{{- end }}

{{/*
Secrets. The chart creates one Secret (named like the release) holding the auth tokens from
auth.tokens and/or the Redis URL from results.redis.url. With auth.existingSecret or
results.redis.existingSecret it references that Secret instead and never renders the value.
*/}}
{{- define "emostt.createAuthSecret" -}}
{{- if and .Values.auth.tokens (not .Values.auth.existingSecret) }}true{{ end }}
{{- end }}

{{- define "emostt.createRedisSecret" -}}
{{- if and .Values.results.redis.url (not .Values.results.redis.existingSecret) }}true{{ end }}
{{- end }}

{{- define "emostt.createSecret" -}}
{{- if or (include "emostt.createAuthSecret" .) (include "emostt.createRedisSecret" .) }}true{{ end }}
{{- end }}

{{/* Key of the Redis URL in the chart-created Secret. */}}
{{- define "emostt.redisSecretKey" -}}
redis-url
{{- end }}

{{- define "emostt.secretName" -}}
{{- default (include "emostt.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{- define "emostt.hasRedis" -}}
{{- if or .Values.results.redis.url .Values.results.redis.existingSecret }}true{{ end }}
{{- end }}

{{- define "emostt.redisSecretName" -}}
{{- default (include "emostt.fullname" .) .Values.results.redis.existingSecret }}
{{- end }}

{{- define "emostt.redisSecretKeyRef" -}}
{{- if .Values.results.redis.existingSecret }}
{{- .Values.results.redis.existingSecretKey }}
{{- else }}
{{- include "emostt.redisSecretKey" . }}
{{- end }}
{{- end }}

{{- define "emostt.hasAuth" -}}
{{- if or .Values.auth.tokens .Values.auth.existingSecret }}true{{ end }}
{{- end }}

{{/*
The value of one EMOSTT_* variable: strings as they are, everything else (numbers, booleans,
lists, maps) as JSON, which is how pydantic-settings parses them. JSON also keeps large numbers
out of Go's exponent notation (toString 1000000.0 is "1e+06").
*/}}
{{- define "emostt.envValue" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ toJson . | quote }}{{ end }}
{{- end }}

{{/*
Whole CPUs of the active mode's container (limits.cpu, else requests.cpu), at least 1; empty when
neither is set. "1500m" -> 1, "2" -> 2, 0.5 -> 1.
*/}}
{{- define "emostt.cpuCount" -}}
{{- $resources := ternary .Values.gpu.resources .Values.resources .Values.gpu.enabled }}
{{- $cpu := "" }}
{{- with $resources.requests }}{{ with .cpu }}{{ $cpu = . }}{{ end }}{{ end }}
{{- with $resources.limits }}{{ with .cpu }}{{ $cpu = . }}{{ end }}{{ end }}
{{- $text := toString $cpu }}
{{- if hasSuffix "m" $text }}
{{- max 1 (div (trimSuffix "m" $text | atoi) 1000) }}
{{- else if $text }}
{{- max 1 (floor (float64 $text) | int) }}
{{- end }}
{{- end }}

{{/*
Timing. The server's own defaults for the three settings the chart sizes things from are in
values.yaml (config.*), and the schema makes them required numbers.
*/}}
{{- define "emostt.drainSeconds" -}}
{{- ceil .Values.config.drain_timeout_s | int }}
{{- end }}

{{- define "emostt.preStopSeconds" -}}
{{- .Values.shutdown.preStopSleepSeconds | int }}
{{- end }}

{{/* preStop pause + drain + margin: the least grace period that lets a drain finish. */}}
{{- define "emostt.minGraceSeconds" -}}
{{- add (include "emostt.preStopSeconds" .) (include "emostt.drainSeconds" .) (.Values.shutdown.marginSeconds | int) }}
{{- end }}

{{- define "emostt.graceSeconds" -}}
{{- $set := .Values.shutdown.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $set }}
{{- include "emostt.minGraceSeconds" . }}
{{- else }}
{{- $set | int }}
{{- end }}
{{- end }}

{{- define "emostt.startupBudgetSeconds" -}}
{{- mul (.Values.probes.startup.periodSeconds | int) (.Values.probes.startup.failureThreshold | int) }}
{{- end }}

{{- define "emostt.progressDeadlineSeconds" -}}
{{- $set := .Values.progressDeadlineSeconds }}
{{- if kindIs "invalid" $set }}
{{- add (include "emostt.startupBudgetSeconds" .) 120 }}
{{- else }}
{{- $set | int }}
{{- end }}
{{- end }}

{{- define "emostt.ingressTimeoutSeconds" -}}
{{- $set := .Values.ingress.nginx.timeoutSeconds }}
{{- if kindIs "invalid" $set }}
{{- add (ceil .Values.config.max_session_s | int) 60 }}
{{- else }}
{{- $set | int }}
{{- end }}
{{- end }}

{{/*
KEDA queries: this release's pods as the ServiceMonitor labels them (namespace, service).
*/}}
{{- define "emostt.promSelector" -}}
namespace="{{ .Release.Namespace }}",service="{{ include "emostt.fullname" . }}"
{{- end }}

{{- define "emostt.kedaUtilizationQuery" -}}
{{- if .Values.keda.prometheus.query }}
{{- .Values.keda.prometheus.query }}
{{- else }}
{{- $sel := include "emostt.promSelector" . -}}
sum(emostt_active_sessions{ {{- $sel -}} }) / avg(emostt_capacity_sessions{ {{- $sel -}} } > 0)
{{- end }}
{{- end }}

{{- define "emostt.kedaQueueWaitQuery" -}}
{{- if .Values.keda.queueWait.query }}
{{- .Values.keda.queueWait.query }}
{{- else }}
{{- $sel := include "emostt.promSelector" . -}}
histogram_quantile(0.95, sum by (le) (rate(emostt_queue_wait_seconds_bucket{kind="final", {{- $sel -}} }[2m])))
{{- end }}
{{- end }}

{{/*
Checks of value combinations the schema cannot express. Included by the Deployment, so every
render runs them; each message says what to change.
*/}}
{{- define "emostt.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "emostt: autoscaling.enabled (HPA) and keda.enabled are mutually exclusive: KEDA creates its own HPA for the Deployment and two HPAs would fight over its replicas. Enable one of them." }}
{{- end }}
{{- if and .Values.auth.existingSecret .Values.auth.tokens }}
{{- fail "emostt: auth.tokens and auth.existingSecret are both set: with an existing Secret the chart never renders tokens. Put the tokens in that Secret and leave auth.tokens empty." }}
{{- end }}
{{- /* The Redis URL may hold a password: these messages never print it. */}}
{{- if and .Values.results.redis.existingSecret .Values.results.redis.url }}
{{- fail "emostt: results.redis.url and results.redis.existingSecret are both set: with an existing Secret the chart never renders the URL. Put the URL in that Secret and leave results.redis.url empty." }}
{{- end }}
{{- if and .Values.results.redis.url (not (regexMatch "^(redis|rediss|unix)://" .Values.results.redis.url)) }}
{{- fail "emostt: results.redis.url must be a redis://, rediss:// or unix:// URL (the value is not shown: it may hold a password)." }}
{{- end }}
{{- if and (include "emostt.createAuthSecret" .) (include "emostt.createRedisSecret" .) (eq .Values.auth.secretKey (include "emostt.redisSecretKey" .)) }}
{{- fail (printf "emostt: auth.secretKey %q is the key the chart-created Secret uses for results.redis.url; choose another auth.secretKey." .Values.auth.secretKey) }}
{{- end }}
{{- $minGrace := include "emostt.minGraceSeconds" . | int }}
{{- if lt (include "emostt.graceSeconds" . | int) $minGrace }}
{{- fail (printf "emostt: shutdown.terminationGracePeriodSeconds (%s) must be at least shutdown.preStopSleepSeconds + config.drain_timeout_s + shutdown.marginSeconds = %d, or open sessions are killed before they get their finals. Leave it null to compute it." (include "emostt.graceSeconds" .) $minGrace) }}
{{- end }}
{{- if lt (include "emostt.startupBudgetSeconds" . | float64) (.Values.config.load_timeout_s | float64) }}
{{- fail (printf "emostt: the startup probe budget (probes.startup.periodSeconds x failureThreshold = %s s) is shorter than config.load_timeout_s (%v s): a slow model download would be killed as a failed start. Raise probes.startup.failureThreshold." (include "emostt.startupBudgetSeconds" .) .Values.config.load_timeout_s) }}
{{- end }}
{{- if and .Values.ingress.enabled .Values.ingress.nginx.enabled }}
{{- if lt (include "emostt.ingressTimeoutSeconds" . | float64) (.Values.config.max_session_s | float64) }}
{{- fail (printf "emostt: ingress.nginx.timeoutSeconds (%s) is below config.max_session_s (%v): nginx would cut sessions the server still allows. Raise it or leave it null." (include "emostt.ingressTimeoutSeconds" .) .Values.config.max_session_s) }}
{{- end }}
{{- end }}
{{- if and .Values.slim.enabled .Values.gpu.enabled }}
{{- fail "emostt: slim.enabled serves on the CPU (the slim image has no torch, so no CUDA): turn off gpu.enabled or slim.enabled." }}
{{- end }}
{{- if and .Values.slim.enabled (has .Values.config.backend (list "torch")) }}
{{- fail "emostt: slim.enabled serves an exported ONNX model dir: config.backend must be auto or onnx, not torch." }}
{{- end }}
{{- if and .Values.slim.enabled (has .Values.config.precision (list "fp32" "fp16" "bf16")) }}
{{- fail (printf "emostt: slim.enabled serves the int8 ONNX graph: config.precision must be auto or int8, not %s." .Values.config.precision) }}
{{- end }}
{{- if gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int) }}
{{- fail "emostt: autoscaling.minReplicas is greater than autoscaling.maxReplicas." }}
{{- end }}
{{- if and .Values.keda.enabled (not .Values.keda.prometheus.serverAddress) }}
{{- fail "emostt: keda.enabled needs keda.prometheus.serverAddress (the Prometheus URL KEDA queries)." }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "emostt: set only one of podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable (set the other to null)." }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable) }}
{{- fail "emostt: podDisruptionBudget.enabled needs podDisruptionBudget.maxUnavailable or podDisruptionBudget.minAvailable." }}
{{- end }}
{{- end }}

{{/* An emptyDir source, with a size limit when one is given (flow style: one line). */}}
{{- define "emostt.emptyDir" -}}
{{- if . }}{{ dict "sizeLimit" . | toJson }}{{ else }}{}{{ end }}
{{- end }}
