{{/* The chart name, or nameOverride. */}}
{{- define "modelreg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: fullnameOverride, or release-chart (or just the
release name when it already contains the chart name). */}}
{{- define "modelreg.fullname" -}}
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

{{/* Labels on every resource. */}}
{{- define "modelreg.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "modelreg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of the whole release. */}}
{{- define "modelreg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelreg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The image: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "modelreg.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "modelreg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelreg.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret with MODELREG_DATABASE_URL and the S3 credentials. */}}
{{- define "modelreg.secretName" -}}
{{- default (include "modelreg.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Checksums of the ConfigMap and Secret, so that pods restart when a setting changes. */}}
{{- define "modelreg.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}

{{/* Pod-level fields shared by every workload. */}}
{{- define "modelreg.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    {{- if .Values.scratch.tmpSizeLimit }}
    emptyDir:
      sizeLimit: {{ .Values.scratch.tmpSizeLimit }}
    {{- else }}
    emptyDir: {}
    {{- end }}
  - name: data
    {{- if .Values.scratch.dataSizeLimit }}
    emptyDir:
      sizeLimit: {{ .Values.scratch.dataSizeLimit }}
    {{- else }}
    emptyDir: {}
    {{- end }}
{{- end -}}

{{/* Container-level fields shared by every container: image, settings, mounts, security. */}}
{{- define "modelreg.containerCommon" -}}
image: {{ include "modelreg.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "modelreg.fullname" . }}
  - secretRef:
      name: {{ include "modelreg.secretName" . }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: data
    mountPath: /data
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}
