{{/*
Names, labels and images shared by every template. Resource names derive from one prefix
(cipherlane.fullname) so that two releases in one cluster never collide on cluster-scoped
objects (ClusterRoles, the admission policy).
*/}}

{{- define "cipherlane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cipherlane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cipherlane.agentName" -}}
{{- printf "%s-agent" (include "cipherlane.fullname" .) }}
{{- end }}

{{- define "cipherlane.operatorName" -}}
{{- printf "%s-operator" (include "cipherlane.fullname" .) }}
{{- end }}

{{- define "cipherlane.leaseName" -}}
{{- default (include "cipherlane.operatorName" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{- define "cipherlane.uninstallName" -}}
{{- printf "%s-uninstall" (include "cipherlane.fullname" .) }}
{{- end }}

{{/* The service-account user name the admission policy matches. */}}
{{- define "cipherlane.agentUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "cipherlane.agentName" .) }}
{{- end }}

{{- define "cipherlane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cipherlane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cipherlane
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (list $ "agent"). */}}
{{- define "cipherlane.selectorLabels" -}}
{{- $root := index . 0 }}
app.kubernetes.io/name: {{ include "cipherlane.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* An image reference: include with (list $ "agentRepository"). */}}
{{- define "cipherlane.image" -}}
{{- $root := index . 0 }}
{{- $img := $root.Values.image }}
{{- $repo := index $img (index . 1) }}
{{- $prefix := ternary (printf "%s/%s" $img.registry $repo) $repo (ne $img.registry "") }}
{{- if $img.digest }}
{{- printf "%s@%s" $prefix $img.digest }}
{{- else }}
{{- printf "%s:%s" $prefix (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* The cluster pod CIDRs, comma-separated, as the agent reads them. */}}
{{- define "cipherlane.clusterPodCIDRs" -}}
{{- $cidrs := list .Values.clusterPodCIDR }}
{{- if .Values.clusterPodCIDRv6 }}{{ $cidrs = append $cidrs .Values.clusterPodCIDRv6 }}{{ end }}
{{- join "," $cidrs }}
{{- end }}

{{/*
Fails rendering with a message a person understands when values contradict each other in ways
the JSON schema cannot express.
*/}}
{{- define "cipherlane.validate" -}}
{{- if not .Values.clusterPodCIDR }}
{{- fail "clusterPodCIDR is required: the cluster-wide pod CIDR, e.g. --set clusterPodCIDR=10.244.0.0/16" }}
{{- end }}
{{- if and .Values.encryption.fips (eq .Values.encryption.suite "chacha20-poly1305") }}
{{- fail "encryption.fips=true allows only aes-gcm-128 or aes-gcm-256, not chacha20-poly1305" }}
{{- end }}
{{- /* int: a port from --set is an int64, from a values file a float64; eq needs one type */}}
{{- $kex := int .Values.agent.kexPort }}{{ $http := int .Values.agent.httpPort }}{{ $op := int .Values.operator.httpPort }}
{{- if eq $kex $http }}
{{- fail (printf "agent.kexPort and agent.httpPort must differ (both are %v)" .Values.agent.kexPort) }}
{{- end }}
{{- if and .Values.operator.hostNetwork (or (eq $op $http) (eq $op $kex)) }}
{{- fail (printf "operator.httpPort %v collides with an agent port on the host network" .Values.operator.httpPort) }}
{{- end }}
{{- end }}

{{/* Environment shared by the agent, its uninstall and its install-cni init container. */}}
{{- define "cipherlane.agentEnv" -}}
- name: CIPHERLANE_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: CIPHERLANE_NODE_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
- name: CIPHERLANE_CLUSTER_POD_CIDRS
  value: {{ include "cipherlane.clusterPodCIDRs" . | quote }}
- name: CIPHERLANE_STATE_DIR
  value: {{ .Values.agent.stateDir | quote }}
- name: CIPHERLANE_DATA_DIR
  value: {{ .Values.agent.dataDir | quote }}
- name: CIPHERLANE_CNI_BIN_DIR
  value: /host/opt/cni/bin
- name: CIPHERLANE_CNI_CONF_DIR
  value: /host/etc/cni/net.d
- name: CIPHERLANE_CNI_CONF_NAME
  value: {{ .Values.cni.confName | quote }}
- name: CIPHERLANE_CNI_NETWORK_NAME
  value: {{ .Values.network.cniNetworkName | quote }}
- name: RUST_LOG
  value: {{ printf "%s,kube=warn" .Values.agent.logLevel | quote }}
- name: CIPHERLANE_LOG_FORMAT
  value: {{ .Values.agent.logFormat | quote }}
{{- end }}
