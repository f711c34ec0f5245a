{{/* Refuses values that would break the isolation the chart promises. */}}
{{- define "medbench.validate" -}}
{{- $root := . }}
{{- $seen := dict }}
{{- range $key, $c := include "medbench.components" . | fromYaml }}
{{- if (index $root.Values $key).enabled }}
{{- $secret := include "medbench.mongoSecretName" (dict "root" $root "key" $key "name" $c.name) }}
{{- if hasKey $seen $secret }}
{{- fail (printf "%s and %s share the MongoDB Secret %q: each service needs its own MongoDB user" (index $seen $secret) $key $secret) }}
{{- end }}
{{- $_ := set $seen $secret $key }}
{{- end }}
{{- end }}
{{- if and .Values.modelServer.enabled (lt (int .Values.modelServer.tensorParallelSize) 1) }}
{{- fail "modelServer.tensorParallelSize must be at least 1" }}
{{- end }}
{{- if and .Values.modelServer.enabled (gt (int .Values.modelServer.replicaCount) 1) (eq .Values.modelServer.cache.type "persistentVolumeClaim") (not (has "ReadWriteMany" .Values.modelServer.cache.accessModes)) }}
{{- fail "modelServer.replicaCount > 1 with a persistentVolumeClaim cache needs accessModes [ReadWriteMany]" }}
{{- end }}
{{- end }}
