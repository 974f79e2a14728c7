{{/* Names */}}
{{- define "wasmwiz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wasmwiz.fullname" -}}
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

{{- define "wasmwiz.configName" -}}{{ include "wasmwiz.fullname" . }}-config{{- end -}}

{{- define "wasmwiz.secretName" -}}
{{- default (include "wasmwiz.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Labels; call with (dict "ctx" $ "component" "api") */}}
{{- define "wasmwiz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wasmwiz.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "wasmwiz.labels" -}}
{{ include "wasmwiz.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: wasmwiz
{{- end -}}

{{/* Image reference; call with (dict "ctx" $ "image" .Values.image.api) */}}
{{- define "wasmwiz.image" -}}
{{- if .image.digest -}}
{{ .image.repository }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ default .ctx.Chart.AppVersion .image.tag }}
{{- end -}}
{{- end -}}

{{/*
A scalar as the program reads it. Values files are YAML decoded to JSON, so
an unquoted 134217728 arrives as a float64 and would print as 1.34217728e+08.
*/}}
{{- define "wasmwiz.str" -}}
{{- if kindIs "float64" . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{/*
Bytes of a size: plain bytes, a Kubernetes quantity (768Mi, 1G) or the
programs' own suffixes (128MiB). Integers only.
*/}}
{{- define "wasmwiz.bytes" -}}
{{- $s := include "wasmwiz.str" . | trim -}}
{{- if not (regexMatch "^[0-9]+[A-Za-z]*$" $s) -}}
{{- fail (printf "size %q: want an integer with an optional unit such as 768Mi or 128MiB" $s) -}}
{{- end -}}
{{- $n := regexReplaceAll "^([0-9]+)([A-Za-z]*)$" $s "${1}" | atoi -}}
{{- $unit := regexReplaceAll "^([0-9]+)([A-Za-z]*)$" $s "${2}" -}}
{{- $factors := dict "" 1 "B" 1 "k" 1000 "K" 1000 "KB" 1000 "Ki" 1024 "KiB" 1024 "M" 1000000 "MB" 1000000 "Mi" 1048576 "MiB" 1048576 "G" 1000000000 "GB" 1000000000 "Gi" 1073741824 "GiB" 1073741824 "T" 1000000000000 "TB" 1000000000000 "Ti" 1099511627776 "TiB" 1099511627776 -}}
{{- if not (hasKey $factors $unit) -}}
{{- fail (printf "size %q: unknown unit %q" $s $unit) -}}
{{- end -}}
{{- mul $n (get $factors $unit) -}}
{{- end -}}

{{/*
The worker's memory floor: every concurrent execution at MEMORY_LIMIT plus
what an execution holds beyond it (its call stack), the compiled-module
cache, and the Go runtime. Below it the kernel OOM-kills the worker and every
execution on it, instead of one guest failing its limit.
*/}}
{{- define "wasmwiz.workerMemoryFloor" -}}
{{- $mem := include "wasmwiz.bytes" (required "config.MEMORY_LIMIT is required: it sizes the worker pods" .Values.config.MEMORY_LIMIT) | atoi -}}
{{- $conc := include "wasmwiz.str" (required "config.WORKER_CONCURRENCY is required: it sizes the worker pods" .Values.config.WORKER_CONCURRENCY) | atoi -}}
{{- $cache := include "wasmwiz.bytes" (required "config.MODULE_CACHE_BYTES is required: it sizes the worker pods" .Values.config.MODULE_CACHE_BYTES) | atoi -}}
{{- $overhead := include "wasmwiz.bytes" .Values.worker.runtimeOverhead | atoi -}}
{{- $perExecution := include "wasmwiz.bytes" .Values.worker.executionOverhead | atoi -}}
{{- add (mul (add $mem $perExecution) $conc) $cache $overhead -}}
{{- end -}}

{{/*
The api's memory floor: the validation budget (384 MiB: what the validations
of concurrent uploads may hold together; runner.DefaultValidationBudget) and
256 MiB for the Go runtime and the bodies of requests in flight.
*/}}
{{- define "wasmwiz.apiMemoryFloor" -}}
{{- mul 640 1048576 -}}
{{- end -}}

{{/* api.resources, with the memory limit checked against the api's floor. */}}
{{- define "wasmwiz.apiResources" -}}
{{- $res := default dict .Values.api.resources -}}
{{- $limits := default dict $res.limits -}}
{{- $floor := include "wasmwiz.apiMemoryFloor" . | atoi -}}
{{- if not $limits.memory -}}
{{- fail (printf "api.resources.limits.memory is required: validating uploads may hold up to 384 MiB; give the api at least %d MiB" (div $floor 1048576)) -}}
{{- end -}}
{{- $have := include "wasmwiz.bytes" $limits.memory | atoi -}}
{{- if lt $have $floor -}}
{{- fail (printf "api.resources.limits.memory %s is %d MiB, below the %d MiB the api needs: validating uploads may hold up to 384 MiB, plus 256 MiB for the Go runtime and request bodies" (include "wasmwiz.str" $limits.memory) (div $have 1048576) (div $floor 1048576)) -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/*
A GOMEMLIMIT env entry at goMemLimitPercent of a memory limit, in MiB; none
when the percentage is 0. Call with (dict "ctx" $ "limit" "768Mi").
*/}}
{{- define "wasmwiz.goMemLimitEnv" -}}
{{- $pct := int .ctx.Values.goMemLimitPercent -}}
{{- if and $pct .limit -}}
{{- $bytes := include "wasmwiz.bytes" .limit | atoi -}}
- name: GOMEMLIMIT
  value: {{ printf "%dMiB" (div (mul $bytes $pct) (mul 100 1048576)) | quote }}
{{- end -}}
{{- end -}}

{{/*
The worker's memory limit: the one given, checked against the floor, or
the floor rounded up to MiB when left out.
*/}}
{{- define "wasmwiz.workerMemoryLimit" -}}
{{- $floor := include "wasmwiz.workerMemoryFloor" . | atoi -}}
{{- $limits := default dict (default dict .Values.worker.resources).limits -}}
{{- if $limits.memory -}}
{{- $have := include "wasmwiz.bytes" $limits.memory | atoi -}}
{{- if lt $have $floor -}}
{{- fail (printf "worker.resources.limits.memory %s is %d MiB, below the %d MiB the workers need: WORKER_CONCURRENCY %s x (MEMORY_LIMIT %s + worker.executionOverhead %s) + MODULE_CACHE_BYTES %s + worker.runtimeOverhead %s. Raise the limit, lower WORKER_CONCURRENCY or MEMORY_LIMIT, or leave limits.memory out and the chart computes it." (include "wasmwiz.str" $limits.memory) (div $have 1048576) (div (add $floor 1048575) 1048576) (include "wasmwiz.str" .Values.config.WORKER_CONCURRENCY) (include "wasmwiz.str" .Values.config.MEMORY_LIMIT) (include "wasmwiz.str" .Values.worker.executionOverhead) (include "wasmwiz.str" .Values.config.MODULE_CACHE_BYTES) (include "wasmwiz.str" .Values.worker.runtimeOverhead)) -}}
{{- end -}}
{{- include "wasmwiz.str" $limits.memory -}}
{{- else -}}
{{- printf "%dMi" (div (add $floor 1048575) 1048576) -}}
{{- end -}}
{{- end -}}

{{/*
worker.resources with the memory limit of wasmwiz.workerMemoryLimit, and the
request equal to it unless given.
*/}}
{{- define "wasmwiz.workerResources" -}}
{{- $res := deepCopy (default dict .Values.worker.resources) -}}
{{- $limits := default dict $res.limits -}}
{{- $requests := default dict $res.requests -}}
{{- $_ := set $limits "memory" (include "wasmwiz.workerMemoryLimit" .) -}}
{{- if not $requests.memory -}}
{{- $_ := set $requests "memory" $limits.memory -}}
{{- end -}}
{{- $_ := set $res "limits" $limits -}}
{{- $_ := set $res "requests" $requests -}}
{{- toYaml $res -}}
{{- end -}}

{{/* One env entry from the Secret; call with (dict "ctx" $ "name" "DATABASE_URL" "key" "DATABASE_URL") */}}
{{- define "wasmwiz.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "wasmwiz.secretName" .ctx }}
      key: {{ .key }}
{{- end -}}

{{- define "wasmwiz.workerDatabaseKey" -}}
{{- if .Values.secrets.keys.workerDatabaseURL -}}
{{ .Values.secrets.keys.workerDatabaseURL }}
{{- else if and (not .Values.secrets.existingSecret) .Values.postgresql.workerUrl -}}
WORKER_DATABASE_URL
{{- else -}}
{{ .Values.secrets.keys.databaseURL }}
{{- end -}}
{{- end -}}

{{/* The environment of the api and the migration Job. */}}
{{- define "wasmwiz.apiSecretEnv" -}}
{{ include "wasmwiz.secretEnv" (dict "ctx" . "name" "DATABASE_URL" "key" .Values.secrets.keys.databaseURL) }}
{{ include "wasmwiz.secretEnv" (dict "ctx" . "name" "REDIS_URL" "key" .Values.secrets.keys.redisURL) }}
{{ include "wasmwiz.secretEnv" (dict "ctx" . "name" "NATS_URL" "key" .Values.secrets.keys.natsURL) }}
{{ include "wasmwiz.secretEnv" (dict "ctx" . "name" "API_SALT" "key" .Values.secrets.keys.apiSalt) }}
{{ include "wasmwiz.secretEnv" (dict "ctx" . "name" "JWT_SECRET" "key" .Values.secrets.keys.jwtSecret) }}
{{- end -}}

{{/*
ConfigMap and Secret must exist before the pre-install migration hook runs,
so they are hooks themselves, made first (weight -10). pre-rollback puts the
older release's copies back on rollback.
*/}}
{{- define "wasmwiz.configHookAnnotations" -}}
{{- if .Values.migration.enabled -}}
helm.sh/hook: pre-install,pre-upgrade,pre-rollback
helm.sh/hook-weight: "-10"
helm.sh/hook-delete-policy: before-hook-creation
{{- end -}}
{{- end -}}

{{/* A generated secret value, kept across upgrades; call with (dict "ctx" $ "key" "API_SALT" "value" .Values.secrets.apiSalt "length" 48) */}}
{{- define "wasmwiz.secretValue" -}}
{{- if .value -}}
{{ .value }}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace (include "wasmwiz.fullname" .ctx) | default dict -}}
{{- $data := get $existing "data" | default dict -}}
{{- if hasKey $data .key -}}
{{ get $data .key | b64dec }}
{{- else -}}
{{ randAlphaNum (int .length) }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wasmwiz.podSecurity" -}}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* A NetworkPolicy egress rule; call with (dict "name" "dns" "peer" .Values.networkPolicy.dns) */}}
{{- define "wasmwiz.egressRule" -}}
- ports:
    {{- if eq .name "dns" }}
    - port: {{ .peer.port }}
      protocol: UDP
    {{- end }}
    - port: {{ .peer.port }}
      protocol: TCP
  {{- with .peer.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
