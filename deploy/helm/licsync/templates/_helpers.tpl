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
