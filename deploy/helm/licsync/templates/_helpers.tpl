{{/*
_helpers.tpl: names, labels, the image reference, the control plane's derived cluster names and
URL, and the checks that turn bad values into an error at `helm install` time rather than a
crash-looping pod.
*/}}

{{- define "licsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, at most 49 characters so that the suffixes below fit: Service names
are DNS labels of at most 63 characters, and a StatefulSet's name plus the 11 characters of its
controller-revision-hash must fit in a 63-character label value.
*/}}
{{- define "licsync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 49 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 49 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 49 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "licsync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "licsync.labels" -}}
helm.sh/chart: {{ include "licsync.chart" . }}
app.kubernetes.io/name: {{ include "licsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: licsync
{{- end }}

{{- define "licsync.cp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "licsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end }}

{{- define "licsync.dp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "licsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: data-plane
{{- end }}

{{/* Object names. */}}
{{- define "licsync.cp.fullname" -}}
{{- printf "%s-cp" (include "licsync.fullname" .) }}
{{- end }}
{{- define "licsync.cp.adminServiceName" -}}
{{- printf "%s-admin" (include "licsync.fullname" .) }}
{{- end }}
{{- define "licsync.cp.clusterServiceName" -}}
{{- printf "%s-cluster" (include "licsync.fullname" .) }}
{{- end }}
{{- define "licsync.cp.headlessServiceName" -}}
{{- printf "%s-cp-headless" (include "licsync.fullname" .) }}
{{- end }}
{{- define "licsync.dp.fullname" -}}
{{- printf "%s-dp" (include "licsync.fullname" .) }}
{{- end }}

{{- define "licsync.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
The names in the cluster server certificate, as a list: cp.config.cluster.serverNames, or the
cluster Service's DNS names, plus extraServerNames (duplicates dropped, order kept).
*/}}
{{- define "licsync.cp.serverNames" -}}
{{- $cluster := .Values.cp.config.cluster }}
{{- $names := list }}
{{- if $cluster.serverNames }}
{{- $names = $cluster.serverNames }}
{{- else }}
{{- $svc := include "licsync.cp.clusterServiceName" . }}
{{- $names = list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.%s" $svc .Release.Namespace .Values.clusterDomain) }}
{{- end }}
{{- $all := concat $names ($cluster.extraServerNames | default list) | uniq }}
{{- toJson $all }}
{{- end }}

{{/* The URL data planes are told to use. */}}
{{- define "licsync.cp.clusterUrl" -}}
{{- with .Values.cp.config.cluster.advertisedUrl }}
{{- if not (hasPrefix "https://" .) }}
{{- fail (printf "cp.config.cluster.advertisedUrl: %q must start with https://" .) }}
{{- end }}
{{- . }}
{{- else }}
{{- $first := first (include "licsync.cp.serverNames" . | fromJsonArray) }}
{{- if contains ":" $first }}
{{- printf "https://[%s]:%v" $first .Values.cp.service.cluster.port }}
{{- else }}
{{- printf "https://%s:%v" $first .Values.cp.service.cluster.port }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A TOML string (JSON string escapes are valid TOML basic-string escapes) or a TOML array of
strings.
*/}}
{{- define "licsync.toml.string" -}}
{{- . | toString | toJson }}
{{- end }}
{{- define "licsync.toml.strings" -}}
{{- $items := list }}
{{- range . }}{{ $items = append $items (toString .) }}{{ end }}
{{- toJson $items }}
{{- end }}

{{/*
A duration as the programs read it ("500ms", "30s", "1h30m", "90d"), checked here so that a
typo fails the install. Call with (list "key.name" value).
*/}}
{{- define "licsync.toml.duration" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 | toString }}
{{- if not (regexMatch "^([0-9]+(ms|s|m|h|d))+$" $value) }}
{{- fail (printf "%s: invalid duration %q; write a number and a unit (ms, s, m, h, d), e.g. \"30s\", \"4h\" or \"90d\"" $key $value) }}
{{- end }}
{{- $value | toJson }}
{{- end }}

{{/* A whole number >= 0 (a count or a limit). Call with (list "key.name" value). */}}
{{- define "licsync.toml.count" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 | toString }}
{{- if not (regexMatch "^[0-9]+$" $value) }}
{{- fail (printf "%s: %q is not a whole number; write e.g. 512" $key $value) }}
{{- end }}
{{- $value }}
{{- end }}

{{/* true or false. Call with (list "key.name" value). */}}
{{- define "licsync.toml.bool" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 | toString }}
{{- if not (has $value (list "true" "false")) }}
{{- fail (printf "%s: %q is not true or false" $key $value) }}
{{- end }}
{{- $value }}
{{- end }}

{{/* log.format: "text" or "json". Call with (list "key.name" value). */}}
{{- define "licsync.toml.logFormat" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 | toString }}
{{- if not (has $value (list "text" "json")) }}
{{- fail (printf "%s: %q is not a log format; use \"json\" or \"text\"" $key $value) }}
{{- end }}
{{- $value | toJson }}
{{- end }}

{{/*
A Kubernetes quantity ("512Mi", "1Gi", "500M", 268435456) as whole bytes. Call with
(list "key.name" value).
*/}}
{{- define "licsync.bytes" -}}
{{- $key := index . 0 }}
{{- $raw := index . 1 }}
{{- if or (kindIs "float64" $raw) (kindIs "int" $raw) (kindIs "int64" $raw) }}
{{- $raw | int64 }}
{{- else }}
{{- $value := $raw | toString }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $value }}
{{- $suffix := trimPrefix $number $value }}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 }}
{{- if or (not $number) (not (hasKey $units $suffix)) }}
{{- fail (printf "%s: %q is not a size; write bytes (268435456) or a quantity such as \"256Mi\" or \"1Gi\"" $key $value) }}
{{- end }}
{{- mulf (float64 $number) (get $units $suffix) | floor | int64 }}
{{- end }}
{{- end }}

{{/*
storage.sled.cache_capacity in bytes: cp.storage.sled.cacheCapacity, else a quarter of the
container's memory limit (the rest is for the streams, about 40 KiB per connected data plane,
and the runtime), at least 1 MiB; empty when neither is set (sled's own default).
*/}}
{{- define "licsync.cp.sledCacheBytes" -}}
{{- $set := .Values.cp.storage.sled.cacheCapacity }}
{{- $limit := dig "limits" "memory" "" (.Values.cp.resources | default dict) }}
{{- if not (kindIs "invalid" $set) }}
{{- $bytes := include "licsync.bytes" (list "cp.storage.sled.cacheCapacity" $set) | int64 }}
{{- if lt $bytes 1048576 }}
{{- fail (printf "cp.storage.sled.cacheCapacity: %v is below 1 MiB (1048576 bytes)" $set) }}
{{- end }}
{{- $bytes }}
{{- else if $limit }}
{{- $bytes := include "licsync.bytes" (list "cp.resources.limits.memory" $limit) | int64 }}
{{- max 1048576 (div $bytes 4) }}
{{- end }}
{{- end }}

{{/*
The checks on cp.replicas and cp.storage that no schema can express: several nodes need the
shared database, and the PostgreSQL settings must be complete and keep the password out of the
ConfigMap.
*/}}
{{- define "licsync.cp.checkStorage" -}}
{{- $backend := .Values.cp.storage.backend }}
{{- $replicas := int .Values.cp.replicas }}
{{- if and (gt $replicas 1) (ne $backend "postgres") }}
{{- fail (printf "cp.replicas: %d control-plane nodes need cp.storage.backend \"postgres\" (an external PostgreSQL database they share); the embedded database (%q) is single-writer, so use cp.replicas 1 with it" $replicas $backend) }}
{{- end }}
{{- if eq $backend "postgres" }}
{{- $pg := .Values.cp.postgres }}
{{- if not $pg.url }}
{{- fail "cp.postgres.url: required with cp.storage.backend \"postgres\": postgres://USER@HOST:PORT/DB" }}
{{- end }}
{{- if not (regexMatch "^postgres(ql)?://" $pg.url) }}
{{- fail (printf "cp.postgres.url: %q must start with postgres:// (postgres://USER@HOST:PORT/DB)" $pg.url) }}
{{- end }}
{{- if regexMatch "^postgres(ql)?://[^/@]*:[^/@]*@" $pg.url }}
{{- fail "cp.postgres.url: holds a password, which would be stored in a ConfigMap; remove it from the URL and name a Secret in cp.postgres.password.existingSecret" }}
{{- end }}
{{- if not $pg.encryptionKey.existingSecret }}
{{- fail "cp.postgres.encryptionKey.existingSecret: required with cp.storage.backend \"postgres\": the Secret holding the storage key every node shares (licsync-cp storage keygen --output storage.key; kubectl create secret generic licsync-storage-key --from-file=storage.key)" }}
{{- end }}
{{- end }}
{{- if and .Values.cp.licenseWatch.existingConfigMap .Values.cp.licenseWatch.existingSecret }}
{{- fail "cp.licenseWatch: set existingConfigMap or existingSecret, not both" }}
{{- end }}
{{- end }}
