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
{{- /* Each service calls with its own token: its hash must be known to the others. */}}
{{- $hashes := include "medbench.serviceTokenHashes" . | fromJson }}
{{- $callers := list }}
{{- range $key, $c := include "medbench.components" . | fromYaml }}
{{- if (index $root.Values $key).enabled }}{{ $callers = append $callers $c.module }}{{ end }}
{{- end }}
{{- if .Values.site.enabled }}{{ $callers = append $callers "site" }}{{ end }}
{{- range $callers }}
{{- if not (hasKey $hashes .) }}
{{- fail (printf "auth.serviceTokenHashes has no entry for %s: each service needs its own token (README \"Service credentials\")" .) }}
{{- end }}
{{- end }}
{{- if and .Values.modelServer.enabled (lt (int .Values.modelServer.tensorParallelSize) 1) }}
{{- fail "modelServer.tensorParallelSize must be at least 1" }}
{{- end }}
{{- if and .Values.modelServer.enabled (gt (int .Values.modelServer.replicaCount) 1) (eq .Values.modelServer.cache.type "persistentVolumeClaim") (not (has "ReadWriteMany" .Values.modelServer.cache.accessModes)) }}
{{- fail "modelServer.replicaCount > 1 with a persistentVolumeClaim cache needs accessModes [ReadWriteMany]" }}
{{- end }}
{{- if .Values.visionModelServer.enabled }}
{{- $v := include "medbench.visionModelServerValues" . | fromYaml }}
{{- if and (gt (int $v.replicaCount) 1) (eq $v.cache.type "persistentVolumeClaim") (not (has "ReadWriteMany" $v.cache.accessModes)) }}
{{- fail "visionModelServer.replicaCount > 1 with a persistentVolumeClaim cache needs accessModes [ReadWriteMany]" }}
{{- end }}
{{- if not .Values.judgeScorer.enabled }}
{{- fail "visionModelServer: the vision-language judge serves the judge scorer; enable judgeScorer" }}
{{- end }}
{{- end }}
{{- end }}
