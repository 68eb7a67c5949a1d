{{- define "secop.name" -}}security-operator{{- end -}}
{{- define "secop.fullname" -}}{{ .Release.Name }}{{- end -}}
{{- define "secop.labels" -}}
app.kubernetes.io/name: {{ include "secop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "secop.selector" -}}
app.kubernetes.io/name: {{ include "secop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "secop.consoleSelector" -}}
app.kubernetes.io/name: {{ include "secop.name" . }}-console
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "secop.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
