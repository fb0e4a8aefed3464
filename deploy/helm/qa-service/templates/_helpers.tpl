{{/* Names and labels, as `helm create` makes them. */}}
{{- define "qa-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "qa-service.fullname" -}}
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

{{- define "qa-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qa-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "qa-service.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "qa-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The service's own exit, after its answers' grace (QA_SHUTDOWN_GRACE_SECONDS),
in whole seconds, as the code bounds it:
- 3 s until the last answer's final event is delivered: uvicorn notices SIGTERM
  within 0.2 s (a 0.1 s tick, then 0.1 s before it waits), sse-starlette within
  0.5 s (its poll), and uvicorn waits for connections at most the grace + 2 s
  (cli.py, timeout_graceful_shutdown) before it cancels them.
- then the lifespan's close (app.py), each step under its own deadline:
  answers still running are ended and their endings awaited up to
  3 x QA_UPSTREAM_CLOSE_TIMEOUT_SECONDS (registry.py, abort_all: 2x, then 1x
  for the late ones); clients' places given back within 3 s (admission.py,
  drain); readers' loops stopped within 5 s (readers.py, _STOP_SECONDS).
Past all of them the kubelet's SIGKILL cuts only clean-up, never an answer.
*/}}
{{- define "qa-service.exitMarginSeconds" -}}
{{- $closeSeconds := ceil (default 1 (index .Values.env "QA_UPSTREAM_CLOSE_TIMEOUT_SECONDS") | float64) | int }}
{{- add 3 (mul 3 $closeSeconds) 3 5 }}
{{- end }}

{{/* preStop + the answers' grace + the service's exit: the least grace a pod needs. */}}
{{- define "qa-service.requiredGraceSeconds" -}}
{{- add (int .Values.shutdown.preStopSeconds) (int .Values.shutdown.graceSeconds) (include "qa-service.exitMarginSeconds" . | int) }}
{{- end }}

{{/* The derived grace, or the one set in values if it covers the derived one (else rendering fails). */}}
{{- define "qa-service.terminationGracePeriodSeconds" -}}
{{- $required := include "qa-service.requiredGraceSeconds" . | int }}
{{- $set := .Values.shutdown.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $set }}
{{- $required }}
{{- else if lt (int $set) $required }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds=%d is shorter than the drain: preStopSeconds (%d) + graceSeconds (%d) + the service's exit (%s) need %d" (int $set) (int .Values.shutdown.preStopSeconds) (int .Values.shutdown.graceSeconds) (include "qa-service.exitMarginSeconds" .) $required) }}
{{- else }}
{{- int $set }}
{{- end }}
{{- end }}

{{/* Whether the chart makes its own Secret (values given, no existing Secret named). */}}
{{- define "qa-service.ownSecret" -}}
{{- $p := .Values.providerKeys }}
{{- if or (and (not $p.existingSecret) (or $p.openaiApiKey $p.groqApiKey)) (and (not .Values.apiKeys.existingSecret) .Values.apiKeys.keys) (and (not .Values.redis.existingSecret) .Values.redis.url) }}true{{ end }}
{{- end }}

{{- define "qa-service.usesRedis" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{- define "qa-service.promptsConfigMap" -}}
{{- if .Values.prompts.existingConfigMap }}
{{- .Values.prompts.existingConfigMap }}
{{- else if .Values.prompts.files }}
{{- printf "%s-prompts" (include "qa-service.fullname" .) }}
{{- end }}
{{- end }}

{{/* Host names clients reach the service under: QA_ALLOWED_HOSTS refuses others (421). */}}
{{- define "qa-service.allowedHosts" -}}
{{- $hosts := list }}
{{- range .Values.allowedHosts }}{{ $hosts = append $hosts . }}{{ end }}
{{- if .Values.ingress.enabled }}
{{- range .Values.ingress.hosts }}{{ $hosts = append $hosts .host }}{{ end }}
{{- end }}
{{- if .Values.httpRoute.enabled }}
{{- range .Values.httpRoute.hostnames }}{{ $hosts = append $hosts . }}{{ end }}
{{- end }}
{{- $hosts | uniq | join "," }}
{{- end }}

{{/* One of several replicas needs Redis: otherwise a resume lands on a pod that never saw the answer. */}}
{{- define "qa-service.checkReplicas" -}}
{{- $autoscaled := or .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled }}
{{- if and (or $autoscaled (gt (int .Values.replicaCount) 1)) (not (include "qa-service.usesRedis" .)) }}
{{- fail "several replicas (replicaCount > 1 or autoscaling) need redis.url or redis.existingSecret: answers are shared, and resumed on any replica, only through Redis" }}
{{- end }}
{{- if and .Values.autoscaling.hpa.enabled (not .Values.autoscaling.keda.enabled) (not (dig "requests" "cpu" "" .Values.resources)) }}
{{- fail "autoscaling.hpa needs resources.requests.cpu: CPU utilization is measured against it" }}
{{- end }}
{{- end }}

{{/* Scaling in is slow on purpose: each pod removed drains its answers first. */}}
{{- define "qa-service.scaleDownBehavior" -}}
scaleDown:
  stabilizationWindowSeconds: 300
  policies:
    - type: Pods
      value: {{ .Values.autoscaling.scaleDownPodsPerMinute }}
      periodSeconds: 60
{{- end }}
