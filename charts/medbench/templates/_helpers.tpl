{{/* Names, labels and the pieces every component shares. */}}

{{- define "medbench.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "medbench.fullname" -}}
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

{{- define "medbench.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "medbench.labels" -}}
helm.sh/chart: {{ include "medbench.chart" . }}
{{ include "medbench.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: medbench
{{- end }}

{{- define "medbench.selectorLabels" -}}
app.kubernetes.io/name: {{ include "medbench.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* (dict "root" $ "name" "gateway"): labels of one component's objects. */}}
{{- define "medbench.componentLabels" -}}
{{ include "medbench.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "medbench.componentSelectorLabels" -}}
{{ include "medbench.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* (dict "root" $ "name" "gateway"): <fullname>-gateway, the name of the component's objects. */}}
{{- define "medbench.componentName" -}}
{{- printf "%s-%s" (include "medbench.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The six services, keyed by their values key: Kubernetes name, Python module, and whom they call
over gRPC (or HTTP, for the model server). The NetworkPolicies and the peer addresses both come
from `calls`, so the allowed flow and the configured flow cannot drift apart.
*/}}
{{- define "medbench.components" -}}
gateway: {name: gateway, module: gateway, calls: [rotator, dispatcher, aggregator]}
rotator: {name: rotator, module: rotator, calls: [], maintainers: true}
dispatcher: {name: dispatcher, module: dispatcher, calls: [rotator], partners: true}
metricScorer: {name: metric-scorer, module: metric_scorer, calls: []}
judgeScorer: {name: judge-scorer, module: judge_scorer, calls: [modelServer, visionModelServer, rotator], maintainers: true}
aggregator: {name: aggregator, module: aggregator, calls: [], maintainers: true}
{{- end }}

{{/* (dict "root" $ "name" "rotator"): <fullname>-rotator-headless, the component's headless
Service: one DNS A record per ready pod, which the services' peer channels resolve and balance
over round robin (README "Balancing and replicas"). Always ends in -<name>-headless (a long
release name is cut before it), so it never equals another Service's name. */}}
{{- define "medbench.headlessName" -}}
{{- $suffix := printf "-%s-headless" .name }}
{{- printf "%s%s" (include "medbench.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/* (dict "root" $ "name" "rotator"): the gRPC target of a component for its peers:
dns:///<headless Service>.<namespace>.svc:<port>. */}}
{{- define "medbench.peerTarget" -}}
{{- printf "dns:///%s.%s.svc:%v" (include "medbench.headlessName" .) .root.Release.Namespace .root.Values.grpcPort }}
{{- end }}

{{- define "medbench.modelServerName" -}}
{{- include "medbench.componentName" (dict "root" . "name" "judge-model") }}
{{- end }}

{{/*
(dict "root" $ "key" "gateway"): the service's values merged over serviceDefaults, two levels
deep with `set`, so an explicit false or empty value in the service's block wins (sprig's merge
would drop it).
*/}}
{{- define "medbench.serviceValues" -}}
{{- $merged := deepCopy .root.Values.serviceDefaults }}
{{- range $key, $value := (index .root.Values .key) }}
{{- $default := index $merged $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $default) }}
{{- $inner := deepCopy $default }}
{{- range $k, $v := $value }}
{{- $_ := set $inner $k $v }}
{{- end }}
{{- $_ := set $merged $key $inner }}
{{- else }}
{{- $_ := set $merged $key $value }}
{{- end }}
{{- end }}
{{- toYaml $merged }}
{{- end }}

{{/* (dict "root" $ "values" $v "name" "gateway"): the image reference of a service: by default
the one image `make images` builds for all of them, <global.image.repository>/platform. */}}
{{- define "medbench.image" -}}
{{- $g := .root.Values.global.image }}
{{- $repository := .values.image.repository | default (printf "%s/platform" $g.repository) }}
{{- $tag := .values.image.tag | default $g.tag | default .root.Chart.AppVersion }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* (dict "root" $ "values" $v): global nodeSelector with the component's merged over it. */}}
{{- define "medbench.scheduling" -}}
{{- $nodeSelector := merge (deepCopy (.values.nodeSelector | default dict)) .root.Values.global.nodeSelector }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat .root.Values.global.tolerations (.values.tolerations | default list) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $ctx := . }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  {{- /* An entry without a labelSelector spreads this component's own pods. */}}
  {{- $selector := dict "matchLabels" (include "medbench.componentSelectorLabels" $ctx | fromYaml) }}
  {{- toYaml (list (merge (deepCopy .) (dict "labelSelector" $selector))) | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "medbench.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Secret names: the values' name, else the chart's default name the operator creates. */}}
{{- define "medbench.mongoSecretName" -}}
{{- $v := index .root.Values .key }}
{{- $v.mongoSecret | default (printf "%s-mongo" (include "medbench.componentName" .)) }}
{{- end }}

{{- define "medbench.bootstrapSecretName" -}}
{{- .Values.auth.bootstrapSecretName | default (printf "%s-bootstrap" (include "medbench.fullname" .)) }}
{{- end }}

{{/* (dict "root" $ "name" "metric-scorer" "module" "metric_scorer"): the Secret holding that
service's own token ("mbs_<module>_<secret>"); values <key>.authSecret overrides the name. */}}
{{- define "medbench.serviceAuthSecretName" -}}
{{- $v := index .root.Values (.key | default "") | default dict }}
{{- $v.authSecret | default (printf "%s-auth" (include "medbench.componentName" .)) }}
{{- end }}

{{/* The dev cluster's token of one service, derived from dev.serviceToken (dev.createSecrets). */}}
{{- define "medbench.devServiceToken" -}}
{{- printf "mbs_%s_%s" .module (trunc 43 (sha256sum (printf "%s:%s" .root.Values.dev.serviceToken .module))) }}
{{- end }}

{{/* JSON {service: sha256 of its token} every service admits (auth.serviceTokenHashes, or
the dev tokens' with dev.createSecrets). */}}
{{- define "medbench.serviceTokenHashes" -}}
{{- $root := . }}
{{- $hashes := dict }}
{{- if .Values.dev.createSecrets }}
{{- range $module := list "gateway" "rotator" "dispatcher" "metric_scorer" "judge_scorer" "aggregator" "site" }}
{{- $_ := set $hashes $module (sha256sum (include "medbench.devServiceToken" (dict "root" $root "module" $module))) }}
{{- end }}
{{- end }}
{{- range $module, $hash := .Values.auth.serviceTokenHashes }}
{{- $_ := set $hashes $module $hash }}
{{- end }}
{{- toJson $hashes }}
{{- end }}

{{- define "medbench.metricsSecretName" -}}
{{- .Values.metrics.token.secretName | default (printf "%s-metrics" (include "medbench.fullname" .)) }}
{{- end }}

{{- define "medbench.leakSecretName" -}}
{{- .Values.rotator.leakSecret.name | default (printf "%s-leak" (include "medbench.componentName" (dict "root" . "name" "rotator"))) }}
{{- end }}

{{- define "medbench.modelApiKeySecretName" -}}
{{- .Values.modelServer.apiKeySecret.name | default (printf "%s-api" (include "medbench.modelServerName" .)) }}
{{- end }}

{{- define "medbench.secretsSecretName" -}}
{{- .Values.secrets.secretName | default (printf "%s-secrets" (include "medbench.fullname" .)) }}
{{- end }}

{{/*
(dict "root" $ "retention" true): the environment of the services that seal and open partners'
endpoint API keys (gateway, dispatcher): the key-encryption keys, and the sealed database's
name, whose endpoint_keys collection (only) their MongoDB users may use.
*/}}
{{- define "medbench.endpointKeysEnv" -}}
{{- $root := .root -}}
- name: MEDBENCH_MONGO__SEALED_DATABASE
  value: {{ include "medbench.sealedDatabase" $root | quote }}
- name: MEDBENCH_SECRETS__KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "medbench.secretsSecretName" $root }}
      key: {{ $root.Values.secrets.keysKey }}
{{- with $root.Values.secrets.current }}
- name: MEDBENCH_SECRETS__CURRENT
  value: {{ . | quote }}
{{- end }}
{{- if .retention }}
- name: MEDBENCH_SECRETS__STALLED_RETENTION_DAYS
  value: {{ $root.Values.secrets.stalledRetentionDays | quote }}
{{- end }}
{{- end }}

{{- define "medbench.sealedDatabase" -}}
{{- .Values.mongo.sealedDatabase | default (printf "%s_sealed" .Values.mongo.database) }}
{{- end }}

{{/* Environment of every service: bind addresses, identity, its own MongoDB user, its peers. */}}
{{- define "medbench.commonEnv" -}}
{{- $root := .root -}}
- name: MEDBENCH_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: MEDBENCH_GRPC_HOST
  value: "0.0.0.0"
- name: MEDBENCH_GRPC_PORT
  value: {{ $root.Values.grpcPort | quote }}
- name: MEDBENCH_METRICS_HOST
  value: "0.0.0.0"
- name: MEDBENCH_METRICS_PORT
  value: {{ $root.Values.metricsPort | quote }}
- name: MEDBENCH_SHUTDOWN_GRACE_S
  value: {{ .values.shutdownGraceSeconds | quote }}
- name: MEDBENCH_MONGO__URI
  valueFrom:
    secretKeyRef:
      name: {{ include "medbench.mongoSecretName" . }}
      key: {{ $root.Values.mongo.uriKey }}
- name: MEDBENCH_AUTH__SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "medbench.serviceAuthSecretName" . }}
      key: {{ $root.Values.auth.serviceTokenKey }}
{{- if eq .component.module "gateway" }}
- name: MEDBENCH_AUTH__BOOTSTRAP_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "medbench.bootstrapSecretName" $root }}
      key: {{ $root.Values.auth.bootstrapKeyKey }}
      optional: true
{{- end }}
{{- if $root.Values.metrics.token.enabled }}
- name: MEDBENCH_METRICS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "medbench.metricsSecretName" $root }}
      key: {{ $root.Values.metrics.token.key }}
{{- end }}
{{- if .sealed }}
- name: MEDBENCH_MONGO__SEALED_DATABASE
  value: {{ include "medbench.sealedDatabase" $root | quote }}
{{- end }}
{{- $components := include "medbench.components" $root | fromYaml }}
{{- range $peer := .component.calls }}
{{- if hasKey $components $peer }}
- name: MEDBENCH_PEERS__{{ (index $components $peer).module | upper }}
  value: {{ include "medbench.peerTarget" (dict "root" $root "name" (index $components $peer).name) | quote }}
{{- end }}
{{- end }}
{{- include "medbench.kafkaSaslEnv" . }}
{{- range $name, $value := .values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "medbench.grpcProbe" -}}
grpc:
  port: {{ .port }}
{{ toYaml .probe }}
{{- end }}

{{/*
One service: ServiceAccount, Service, Deployment, and the HorizontalPodAutoscaler and
PodDisruptionBudget when enabled. Arguments (dict): root, key (values key), sealed (may read the
sealed database), env (service-specific EnvVar YAML).
*/}}
{{- define "medbench.service" -}}
{{- $root := .root }}
{{- $component := index (include "medbench.components" $root | fromYaml) .key }}
{{- $v := include "medbench.serviceValues" . | fromYaml }}
{{- $ctx := dict "root" $root "key" .key "name" $component.name "values" $v "component" $component "sealed" .sealed }}
{{- $fullname := include "medbench.componentName" $ctx }}
{{- if not (gt (int $v.terminationGracePeriodSeconds) (int $v.shutdownGraceSeconds)) }}
{{- fail (printf "%s: terminationGracePeriodSeconds must exceed shutdownGraceSeconds" .key) }}
{{- end }}
{{- if $root.Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "medbench.componentLabels" $ctx | nindent 4 }}
  {{- with $root.Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
---
{{- end }}
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "medbench.componentLabels" $ctx | nindent 4 }}
    medbench.io/job: medbench-{{ $component.name }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "medbench.componentSelectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $root.Values.grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ $root.Values.metricsPort }}
      targetPort: metrics
      protocol: TCP
---
{{- $called := false }}
{{- range $other := include "medbench.components" $root | fromYaml }}
{{- if has $.key $other.calls }}
{{- $called = true }}
{{- end }}
{{- end }}
{{- if $called }}
{{- /* The headless Service the component's peers call it through (medbench.peerTarget): a
record per ready pod, so their round_robin channels reach every replica. gRPC only: the
ServiceMonitor's metrics port is on the Service above, and this one's component label is
<name>-headless, so no ServiceMonitor selects it and no pod is scraped twice. */}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "medbench.headlessName" $ctx }}
  labels:
    {{- include "medbench.componentLabels" (dict "root" $root "name" (printf "%s-headless" $component.name)) | nindent 4 }}
spec:
  clusterIP: None
  publishNotReadyAddresses: false
  selector:
    {{- include "medbench.componentSelectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $root.Values.grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
---
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "medbench.componentLabels" $ctx | nindent 4 }}
spec:
  {{- /* A KEDA ScaledObject (scaledobject.yaml) replaces the chart's HPA. */}}
  {{- $keda := ($v.keda | default dict).enabled }}
  {{- if not (or $v.autoscaling.enabled $keda) }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "medbench.componentSelectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "medbench.componentLabels" $ctx | nindent 8 }}
        {{- with merge (deepCopy ($v.podLabels | default dict)) $root.Values.global.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/shared-config.yaml") $root | sha256sum }}
        {{- with merge (deepCopy ($v.podAnnotations | default dict)) $root.Values.global.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ if $root.Values.serviceAccount.create }}{{ $fullname }}{{ else }}default{{ end }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- if and $root.Values.priorityClass.enabled (has .key (list "metricScorer" "judgeScorer")) }}
      priorityClassName: {{ include "medbench.priorityClassName" $root }}
      {{- end }}
      {{- with include "medbench.imagePullSecrets" $root }}
      {{- . | trim | nindent 6 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with include "medbench.scheduling" $ctx }}
      {{- . | trim | nindent 6 }}
      {{- end }}
      containers:
        - name: {{ $component.name }}
          image: {{ include "medbench.image" $ctx | quote }}
          imagePullPolicy: {{ $root.Values.global.image.pullPolicy }}
          command: ["python", "-m", {{ $component.module | quote }}]
          ports:
            - name: grpc
              containerPort: {{ $root.Values.grpcPort }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $root.Values.metricsPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "medbench.fullname" $root }}-shared
          env:
            {{- include "medbench.commonEnv" $ctx | nindent 12 }}
            {{- with .env }}
            {{- . | trim | nindent 12 }}
            {{- end }}
          startupProbe:
            {{- include "medbench.grpcProbe" (dict "port" $root.Values.grpcPort "probe" $root.Values.probes.startup) | nindent 12 }}
          readinessProbe:
            {{- include "medbench.grpcProbe" (dict "port" $root.Values.grpcPort "probe" $root.Values.probes.readiness) | nindent 12 }}
          livenessProbe:
            {{- include "medbench.grpcProbe" (dict "port" $root.Values.grpcPort "probe" $root.Values.probes.liveness) | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with include "medbench.transportVolumeMounts" $ctx }}
            {{- . | trim | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
        {{- with include "medbench.transportVolumes" $ctx }}
        {{- . | trim | nindent 8 }}
        {{- end }}
{{- if and $v.autoscaling.enabled (not $keda) }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "medbench.componentLabels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullname }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- if $v.pdb.enabled }}
---
{{ include "medbench.pdb" (dict "ctx" $ctx "maxUnavailable" $v.pdb.maxUnavailable) }}
{{- end }}
{{- end }}

{{- define "medbench.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "medbench.componentName" .ctx }}
  labels:
    {{- include "medbench.componentLabels" .ctx | nindent 4 }}
spec:
  maxUnavailable: {{ .maxUnavailable }}
  selector:
    matchLabels:
      {{- include "medbench.componentSelectorLabels" .ctx | nindent 6 }}
{{- end }}

{{/* Transport security (README "Transport security"): each service's own Kafka user, the
brokers' and MongoDB's CA certificates, and the extra volumes (gRPC TLS certificates). */}}
{{- define "medbench.kafkaSecretName" -}}
{{- $v := index .root.Values .key }}
{{- $v.kafkaSecret | default (printf "%s-kafka" (include "medbench.componentName" .)) }}
{{- end }}

{{/* (the service context): the SASL username and password from the service's Kafka Secret. */}}
{{- define "medbench.kafkaSaslEnv" -}}
{{- $kafka := .root.Values.kafka }}
{{- if hasPrefix "SASL_" $kafka.securityProtocol }}
- name: MEDBENCH_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "medbench.kafkaSecretName" . }}
      key: {{ $kafka.sasl.usernameKey }}
- name: MEDBENCH_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "medbench.kafkaSecretName" . }}
      key: {{ $kafka.sasl.passwordKey }}
{{- end }}
{{- end }}

{{- define "medbench.transportVolumeMounts" -}}
{{- $root := .root }}
{{- if $root.Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/medbench/kafka-ca
  readOnly: true
{{- end }}
{{- if $root.Values.mongo.tls.caSecret }}
- name: mongo-ca
  mountPath: /etc/medbench/mongo-ca
  readOnly: true
{{- end }}
{{- with concat ($root.Values.global.extraVolumeMounts | default list) (.values.extraVolumeMounts | default list) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "medbench.transportVolumes" -}}
{{- $root := .root }}
{{- with $root.Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $root.Values.kafka.tls.caKey }}
        path: {{ $root.Values.kafka.tls.caKey }}
{{- end }}
{{- with $root.Values.mongo.tls.caSecret }}
- name: mongo-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $root.Values.mongo.tls.caKey }}
        path: {{ $root.Values.mongo.tls.caKey }}
{{- end }}
{{- with concat ($root.Values.global.extraVolumes | default list) (.values.extraVolumes | default list) }}
{{ toYaml . }}
{{- end }}
{{- end }}
