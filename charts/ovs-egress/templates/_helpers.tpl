{{/* The base name of every object: the release name, with the chart's name appended unless the release name holds it. */}}
{{- define "ovs-egress.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ovs-egress.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component ("agent" or "controller"); pass (list $ "agent"). */}}
{{- define "ovs-egress.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ $.Chart.Name }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "ovs-egress.agent" -}}{{ include "ovs-egress.fullname" . }}-agent{{- end -}}
{{- define "ovs-egress.controller" -}}{{ include "ovs-egress.fullname" . }}-controller{{- end -}}
{{- define "ovs-egress.config" -}}{{ include "ovs-egress.fullname" . }}-config{{- end -}}
{{- define "ovs-egress.webhookTLS" -}}{{ include "ovs-egress.fullname" . }}-webhook-tls{{- end -}}
{{/* The membership key Secret: <release>-membership-keys (the agents' config and RBAC name it). */}}
{{- define "ovs-egress.membershipSecret" -}}{{ .Release.Name }}-membership-keys{{- end -}}

{{- define "ovs-egress.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Whether the Egress feature gate is on (default true, as in Antrea). */}}
{{- define "ovs-egress.egressEnabled" -}}
{{- $gates := .Values.featureGates | default dict -}}
{{- if hasKey $gates "Egress" -}}{{ $gates.Egress }}{{- else -}}true{{- end -}}
{{- end -}}

{{/* Host directory of OVS's sockets. */}}
{{- define "ovs-egress.ovsHostRunDir" -}}
{{- if .Values.ovs.hostRunDir -}}{{ .Values.ovs.hostRunDir }}
{{- else if .Values.ovs.deploy -}}/var/run/ovs-egress/openvswitch
{{- else -}}/var/run/openvswitch
{{- end -}}
{{- end -}}

{{/* DNS names of the controller's Service, for the webhook's serving certificate. */}}
{{- define "ovs-egress.webhookDNSNames" -}}
{{- $svc := include "ovs-egress.controller" . -}}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson -}}
{{- end -}}
