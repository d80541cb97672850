package charts

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fileOnPerPodVolume is the start of the refusal of a file:// warehouse that several pods would split.
const fileOnPerPodVolume = "worker.iceberg.warehouse is file:///var/lib/philotes/warehouse on a per-pod volume (dataVolumeShared is false), but the release runs more than one pod ("

// lakeDeletedWithThePod is the install notes' warning for a file:// warehouse on the pod's own volume.
const lakeDeletedWithThePod = "the lake is deleted with the pod"

// rwxLake is a file:// warehouse on a ReadWriteMany claim that every pod mounts.
const rwxLake = "dataVolume: {persistentVolumeClaim: {claimName: lake}}\ndataVolumeShared: true\n"

// s3Full is an object-store warehouse with every S3 setting, static keys included.
const s3Full = `worker:
  iceberg:
    warehouse: s3://philotes-lake/warehouse
    s3:
      endpoint: http://minio.storage:9000
      region: eu-central-1
      pathStyle: true
      existingSecret: lake-keys
      accessKeyIdKey: id
      secretAccessKeyKey: secret
      sessionTokenKey: token
`

// workerPods returns the pod specs of everything the release runs the worker in: the Deployment, the ScaledJob's
// job template and the backfill Job, keyed by kind.
func workerPods(t *testing.T, r *Rendered) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{
		"Deployment": get(t, r.one(t, "Deployment", fullname), "spec", "template", "spec").(map[string]any),
	}
	if sj := r.find("ScaledJob"); len(sj) > 0 {
		out["ScaledJob"] = get(t, r.one(t, "ScaledJob", ""), "spec", "jobTargetRef", "template", "spec").(map[string]any)
	}
	if jobs := r.find("Job"); len(jobs) > 0 {
		out["Job"] = get(t, r.one(t, "Job", ""), "spec", "template", "spec").(map[string]any)
	}
	return out
}

// envByName returns a pod's worker container env entries keyed by name.
func envByName(t *testing.T, pod map[string]any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	env, _ := get(t, pod, "containers", 0).(map[string]any)["env"].([]any)
	for _, e := range env {
		m := e.(map[string]any)
		out[m["name"].(string)] = m
	}
	return out
}

// volumeByName returns a pod's volumes keyed by name.
func volumeByName(t *testing.T, pod map[string]any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, v := range get(t, pod, "volumes").([]any) {
		m := v.(map[string]any)
		out[m["name"].(string)] = m
	}
	return out
}

// TestFileWarehouseThatLosesDataIsRefused checks that a file:// warehouse on per-pod volumes is refused whenever the
// release runs more than one pod, with a message naming the warehouse, the values responsible and the two fixes;
// and that the other warehouse and S3 values that cannot work are refused naming the setting.
func TestFileWarehouseThatLosesDataIsRefused(t *testing.T) {
	fixes := []string{"worker.iceberg.warehouse: s3://bucket/prefix with worker.iceberg.s3.*", "a ReadWriteMany persistentVolumeClaim as dataVolume with dataVolumeShared: true",
		"each pod would write its own lake and a deleted pod deletes its files while the catalog still lists them"}
	multi := func(reasons string) []string { return append([]string{fileOnPerPodVolume + reasons + ")"}, fixes...) }
	cases := []refusal{
		{"replicaCount 2", "replicaCount: 2\n", multi("replicaCount: 2")},
		{"keda", "keda: {enabled: true}\n", multi("keda.enabled")},
		{"keda scale to zero", "keda:\n  enabled: true\n  minReplicaCount: 0\n" + pgTrigger, multi("keda.enabled")},
		{"keda with at most one replica", "keda: {enabled: true, minReplicaCount: 0, maxReplicas: 1}\n", multi("keda.enabled")},
		{"the ScaledJob", "keda: {scaledJob: {enabled: true}}\n", multi("keda.scaledJob.enabled")},
		{"the ScaledJob next to a reader-only Deployment", "keda: {scaledJob: {enabled: true, minReplicaCount: 0}}\nworker: {processors: 0}\n", multi("keda.scaledJob.enabled")},
		{"the plain HPA", "autoscaling: {enabled: true}\n", multi("autoscaling.enabled")},
		{"the backfill Job next to the Deployment", "database: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders]}\n",
			multi("backfillJob.enabled next to the Deployment's pods")},
		{"everything at once", "replicaCount: 3\nautoscaling: {enabled: true}\nkeda: {enabled: true, scaledJob: {enabled: true}}\ndatabase: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders]}\n",
			multi("keda.enabled, keda.scaledJob.enabled, autoscaling.enabled, backfillJob.enabled next to the Deployment's pods")},
		{"a ReadWriteOnce claim not marked shared", "dataVolume: {persistentVolumeClaim: {claimName: lake}}\nkeda: {enabled: true}\n", multi("keda.enabled")},
		{"an explicit emptyDir", "dataVolume: {emptyDir: {medium: Memory}}\nreplicaCount: 2\n", multi("replicaCount: 2")},
		{"another file:// path", "worker: {iceberg: {warehouse: file:///var/lib/philotes/lake}}\nreplicaCount: 2\n",
			[]string{"worker.iceberg.warehouse is file:///var/lib/philotes/lake on a per-pod volume"}},
		{"dataVolumeShared without a claim", "dataVolumeShared: true\nkeda: {enabled: true}\n",
			[]string{"dataVolumeShared is true but dataVolume has no persistentVolumeClaim", "ReadWriteMany", "set dataVolumeShared to false"}},
		{"dataVolumeShared on an emptyDir, one replica", "dataVolumeShared: true\n",
			[]string{"dataVolumeShared is true but dataVolume has no persistentVolumeClaim"}},
		{"s3 endpoint with a file:// warehouse", "worker: {iceberg: {s3: {endpoint: 'http://minio:9000'}}}\n",
			[]string{"worker.iceberg.s3.endpoint set but worker.iceberg.warehouse is file:///var/lib/philotes/warehouse, not s3:// or s3a://", "would be ignored", "Set worker.iceberg.warehouse to s3://bucket/prefix"}},
		{"s3 region with a file:// warehouse", "worker: {iceberg: {s3: {region: eu-west-1}}}\n", []string{"worker.iceberg.s3.region set"}},
		{"s3 existingSecret with a file:// warehouse", "worker: {iceberg: {s3: {existingSecret: keys}}}\n", []string{"worker.iceberg.s3.existingSecret set"}},
		{"s3 pathStyle true with a file:// warehouse", "worker: {iceberg: {s3: {pathStyle: true}}}\n", []string{"worker.iceberg.s3.pathStyle set"}},
		{"s3 pathStyle false with a file:// warehouse", "worker: {iceberg: {s3: {pathStyle: false}}}\n", []string{"worker.iceberg.s3.pathStyle set"}},
		{"several s3 settings with a file:// warehouse", "worker: {iceberg: {s3: {endpoint: 'http://minio:9000', existingSecret: keys, sessionTokenKey: t}}}\n",
			[]string{"worker.iceberg.s3.endpoint, worker.iceberg.s3.existingSecret, worker.iceberg.s3.sessionTokenKey set"}},
		{"a session token without the Secret", mergeValues(s3Lake, "worker: {iceberg: {s3: {sessionTokenKey: token}}}\n"),
			[]string{"worker.iceberg.s3.sessionTokenKey is set but worker.iceberg.s3.existingSecret is empty"}},
		{"catalogWarehouse without catalogUri", "worker: {iceberg: {catalogWarehouse: lake}}\n",
			[]string{"worker.iceberg.catalogWarehouse (lake) is set but worker.iceberg.catalogUri is empty", "REST catalog"}},
		{"schema: gs:// warehouse", "worker: {iceberg: {warehouse: 'gs://lake/x'}}\n", []string{"warehouse"}},
		{"schema: relative file:// warehouse", "worker: {iceberg: {warehouse: 'file://var/lib/x'}}\n", []string{"warehouse"}},
		{"schema: file:/// root", "worker: {iceberg: {warehouse: 'file:///'}}\n", []string{"warehouse"}},
		{"schema: a bare path", "worker: {iceberg: {warehouse: /var/lib/philotes/warehouse}}\n", []string{"warehouse"}},
		{"schema: s3:// without a bucket", "worker: {iceberg: {warehouse: 's3:///prefix'}}\n", []string{"warehouse"}},
		{"schema: s3:// bucket with upper case", "worker: {iceberg: {warehouse: 's3://My_Bucket/x'}}\n", []string{"warehouse"}},
		{"schema: s3:// with a query", "worker: {iceberg: {warehouse: 's3://lake/x?key=secret'}}\n", []string{"warehouse"}},
		{"schema: pathStyle yes", mergeValues(s3Lake, "worker: {iceberg: {s3: {pathStyle: 'yes'}}}\n"), []string{"pathStyle"}},
		{"schema: pathStyle as the string true", mergeValues(s3Lake, "worker: {iceberg: {s3: {pathStyle: 'true'}}}\n"), []string{"pathStyle"}},
		{"schema: endpoint without a scheme", mergeValues(s3Lake, "worker: {iceberg: {s3: {endpoint: 'minio:9000'}}}\n"), []string{"endpoint"}},
		{"schema: empty accessKeyIdKey", mergeValues(s3Lake, "worker: {iceberg: {s3: {existingSecret: k, accessKeyIdKey: ''}}}\n"), []string{"accessKeyIdKey"}},
		{"schema: unknown key under worker.iceberg.s3", mergeValues(s3Lake, "worker: {iceberg: {s3: {bucket: lake}}}\n"), []string{"bucket"}},
		{"schema: dataVolumeShared as a string", "dataVolumeShared: 'yes'\n", []string{"dataVolumeShared"}},
		{"schema: dataVolumeSizeLimit not a quantity", "dataVolumeSizeLimit: lots\n", []string{"dataVolumeSizeLimit"}},
		{"schema: tmpVolumeSizeLimit not a quantity", "tmpVolumeSizeLimit: 1 GB\n", []string{"tmpVolumeSizeLimit"}},
	}
	requireRefused(t, "", cases)

	t.Run("values from --set (int64)", func(t *testing.T) {
		_, err := renderValues(workerChart, map[string]any{"replicaCount": int64(3)})
		require.ErrorContains(t, err, fileOnPerPodVolume+"replicaCount: 3)")
	})
	t.Run("through the umbrella", func(t *testing.T) {
		err := renderErr(t, umbrellaChart, "philotes-worker:\n  keda: {enabled: true}\n")
		require.ErrorContains(t, err, fileOnPerPodVolume+"keda.enabled)")
	})
}

// TestWarehouseSetupsThatKeepDataRender checks the allowed setups: one fixed pod on file:// (with the notes'
// warning when the volume is the pod's own), an object store with every kind of scaling, and a shared ReadWriteMany
// claim with KEDA.
func TestWarehouseSetupsThatKeepDataRender(t *testing.T) {
	cases := []struct {
		name, values string
		warn         bool
	}{
		{"single replica, file:// on the default emptyDir", "", true},
		{"replicaCount 1, explicit", "replicaCount: 1\n", true},
		{"no Deployment pod, the backfill Job alone", "replicaCount: 0\ndatabase: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders]}\n", true},
		{"single replica on a ReadWriteOnce claim", "dataVolume: {persistentVolumeClaim: {claimName: lake}}\n", false},
		{"s3 with KEDA", kedaWith(""), false},
		{"s3 with KEDA scale to zero", kedaWith("  minReplicaCount: 0\n" + pgTrigger), false},
		{"s3a with KEDA", "worker: {iceberg: {warehouse: 's3a://philotes-lake'}}\nkeda: {enabled: true}\n", false},
		{"s3 with the ScaledJob, the HPA, the backfill Job and 3 replicas", s3Lake + "replicaCount: 3\nautoscaling: {enabled: true}\nkeda: {scaledJob: {enabled: true}}\ndatabase: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders]}\n", false},
		{"s3 with every setting and KEDA", s3Full + "keda: {enabled: true}\n", false},
		{"a shared ReadWriteMany claim with KEDA", rwxLake + "keda:\n  enabled: true\n  minReplicaCount: 0\n" + pgTrigger, false},
		{"a shared ReadWriteMany claim with the ScaledJob, the HPA and the backfill Job", rwxLake + "autoscaling: {enabled: true}\nkeda: {scaledJob: {enabled: true}}\ndatabase: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders]}\n", false},
		{"a REST catalog with a warehouse name", "worker: {iceberg: {catalogUri: 'http://lakekeeper:8181/catalog', catalogWarehouse: lake}}\n", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, workerChart, tc.values)
			if tc.warn {
				require.Contains(t, r.Notes, lakeDeletedWithThePod)
				require.Contains(t, r.Notes, "worker.iceberg.warehouse is file://")
				require.Contains(t, r.Notes, "s3://bucket/prefix")
			} else {
				require.NotContains(t, r.Notes, lakeDeletedWithThePod)
			}
		})
	}
	t.Run("the claim replaces the default emptyDir on every pod", func(t *testing.T) {
		r := mustRender(t, workerChart, rwxLake+"keda: {enabled: true, scaledJob: {enabled: true}}\ndatabase: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders]}\n")
		pods := workerPods(t, r)
		require.Len(t, pods, 3)
		for kind, pod := range pods {
			require.Equal(t, map[string]any{"name": "data", "persistentVolumeClaim": map[string]any{"claimName": "lake"}}, volumeByName(t, pod)["data"], kind)
		}
	})
	t.Run("the catalog warehouse reaches the ConfigMap", func(t *testing.T) {
		r := mustRender(t, workerChart, "worker: {iceberg: {catalogUri: 'http://lakekeeper:8181/catalog', catalogWarehouse: lake}}\n")
		cm := get(t, r.one(t, "ConfigMap", fullname), "data").(map[string]any)
		require.Equal(t, "lake", cm["PHILOTES_ICEBERG_CATALOG_WAREHOUSE"])
		require.Equal(t, "http://lakekeeper:8181/catalog", cm["PHILOTES_ICEBERG_CATALOG_URI"])
	})
}

// TestS3CredentialsOnlyThroughSecretKeyRef checks that the S3 keys reach every pod that runs the worker (the
// Deployment, the ScaledJob's jobs, the backfill Job) as secretKeyRefs to worker.iceberg.s3.existingSecret, and never
// as a plain value, in a ConfigMap or in a Secret the chart renders.
func TestS3CredentialsOnlyThroughSecretKeyRef(t *testing.T) {
	credentials := []string{"PHILOTES_S3_ACCESS_KEY_ID", "PHILOTES_S3_SECRET_ACCESS_KEY", "PHILOTES_S3_SESSION_TOKEN"}
	all := "keda: {enabled: true, scaledJob: {enabled: true}}\ndatabase: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders]}\n"

	t.Run("with static keys and a session token", func(t *testing.T) {
		r := mustRender(t, workerChart, s3Full+all)
		pods := workerPods(t, r)
		require.Len(t, pods, 3, "Deployment, ScaledJob and backfill Job")
		want := map[string]string{"PHILOTES_S3_ACCESS_KEY_ID": "id", "PHILOTES_S3_SECRET_ACCESS_KEY": "secret", "PHILOTES_S3_SESSION_TOKEN": "token"}
		for kind, pod := range pods {
			env := envByName(t, pod)
			for n, key := range want {
				require.Contains(t, env, n, kind)
				require.NotContains(t, env[n], "value", "%s %s: a plain value", kind, n)
				require.Equal(t, map[string]any{"secretKeyRef": map[string]any{"name": "lake-keys", "key": key}}, env[n]["valueFrom"], "%s %s", kind, n)
			}
		}
		requireNoCredentialInConfig(t, r, credentials)
	})
	t.Run("with static keys, no session token", func(t *testing.T) {
		r := mustRender(t, workerChart, mergeValues(s3Lake, "worker: {iceberg: {s3: {existingSecret: lake-keys}}}\n", all))
		for kind, pod := range workerPods(t, r) {
			env := envByName(t, pod)
			require.Equal(t, "access-key-id", get(t, env["PHILOTES_S3_ACCESS_KEY_ID"], "valueFrom", "secretKeyRef", "key"), kind)
			require.Equal(t, "secret-access-key", get(t, env["PHILOTES_S3_SECRET_ACCESS_KEY"], "valueFrom", "secretKeyRef", "key"), kind)
			require.NotContains(t, env, "PHILOTES_S3_SESSION_TOKEN", kind)
		}
		requireNoCredentialInConfig(t, r, credentials)
	})
	t.Run("without existingSecret: the AWS SDK default chain (IRSA)", func(t *testing.T) {
		r := mustRender(t, workerChart, s3Lake+all+"serviceAccount: {annotations: {eks.amazonaws.com/role-arn: 'arn:aws:iam::123456789012:role/philotes'}}\n")
		for kind, pod := range workerPods(t, r) {
			env := envByName(t, pod)
			for _, n := range credentials {
				require.NotContains(t, env, n, kind)
			}
		}
		requireNoCredentialInConfig(t, r, credentials)
		require.Equal(t, "arn:aws:iam::123456789012:role/philotes", get(t, r.one(t, "ServiceAccount", fullname), "metadata", "annotations", "eks.amazonaws.com/role-arn"))
	})
}

// requireNoCredentialInConfig checks that no ConfigMap and no chart Secret holds an S3 credential, and that no
// container carries one as a plain value.
func requireNoCredentialInConfig(t *testing.T, r *Rendered, credentials []string) {
	t.Helper()
	for _, kind := range []string{"ConfigMap", "Secret"} {
		for _, o := range r.find(kind) {
			for _, n := range credentials {
				require.NotContains(t, fmt.Sprint(o["data"]), n, "%s %s", kind, name(o))
			}
		}
	}
	for kind, pod := range workerPods(t, r) {
		for n, e := range envByName(t, pod) {
			if strings.HasPrefix(n, "PHILOTES_S3_") {
				require.NotContains(t, e, "value", "%s %s", kind, n)
			}
		}
	}
}

// TestS3SettingsReachTheConfigMap checks endpoint, region and pathStyle (auto, true or false, never swallowed) in the
// ConfigMap that every worker pod reads.
func TestS3SettingsReachTheConfigMap(t *testing.T) {
	cases := []struct {
		name   string
		values string
		set    map[string]any
		want   map[string]string
	}{
		{name: "file:// defaults", values: "",
			want: map[string]string{"PHILOTES_S3_ENDPOINT": "", "PHILOTES_S3_REGION": "", "PHILOTES_S3_PATH_STYLE": "auto", "PHILOTES_ICEBERG_CATALOG_WAREHOUSE": ""}},
		{name: "s3 defaults: auto", values: s3Lake,
			want: map[string]string{"PHILOTES_ICEBERG_WAREHOUSE": s3Warehouse, "PHILOTES_S3_ENDPOINT": "", "PHILOTES_S3_REGION": "", "PHILOTES_S3_PATH_STYLE": "auto"}},
		{name: "pathStyle true", values: mergeValues(s3Lake, "worker: {iceberg: {s3: {endpoint: 'http://minio:9000', region: us-east-1, pathStyle: true}}}\n"),
			want: map[string]string{"PHILOTES_S3_ENDPOINT": "http://minio:9000", "PHILOTES_S3_REGION": "us-east-1", "PHILOTES_S3_PATH_STYLE": "true"}},
		{name: "pathStyle false", values: mergeValues(s3Lake, "worker: {iceberg: {s3: {pathStyle: false}}}\n"),
			want: map[string]string{"PHILOTES_S3_PATH_STYLE": "false"}},
		{name: "pathStyle auto, explicit", values: mergeValues(s3Lake, "worker: {iceberg: {s3: {pathStyle: auto}}}\n"),
			want: map[string]string{"PHILOTES_S3_PATH_STYLE": "auto"}},
		{name: "pathStyle false from --set", set: mergeMaps(s3LakeMap(), map[string]any{"worker": map[string]any{"iceberg": map[string]any{"s3": map[string]any{"pathStyle": false}}}}),
			want: map[string]string{"PHILOTES_S3_PATH_STYLE": "false"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireConfigMap(t, tc.values, tc.set, tc.want)
		})
	}
}

// TestScratchSpaceIsBounded checks the emptyDirs' sizeLimit and the ephemeral-storage request and limit on every
// worker pod, and that the size limits are configurable.
func TestScratchSpaceIsBounded(t *testing.T) {
	t.Run("defaults on every pod", func(t *testing.T) {
		r := mustRender(t, workerChart, s3Lake+"keda: {scaledJob: {enabled: true}}\ndatabase: {existingSecret: db}\nbackfillJob: {enabled: true, tables: [public.orders]}\n")
		pods := workerPods(t, r)
		require.Len(t, pods, 3)
		for kind, pod := range pods {
			vols := volumeByName(t, pod)
			require.Equal(t, map[string]any{"sizeLimit": "2Gi"}, vols["data"]["emptyDir"], kind)
			require.Equal(t, map[string]any{"sizeLimit": "256Mi"}, vols["tmp"]["emptyDir"], kind)
			res := get(t, pod, "containers", 0, "resources")
			require.Equal(t, "256Mi", get(t, res, "requests", "ephemeral-storage"), kind)
			require.Equal(t, "3Gi", get(t, res, "limits", "ephemeral-storage"), kind)
		}
	})
	cases := []struct {
		name, values string
		data         map[string]any
		tmp          string
	}{
		{"sizes from values", "dataVolumeSizeLimit: 20Gi\ntmpVolumeSizeLimit: 1Gi\n", map[string]any{"sizeLimit": "20Gi"}, "1Gi"},
		{"an emptyDir's own sizeLimit wins", "dataVolume: {emptyDir: {sizeLimit: 5Gi}}\ndataVolumeSizeLimit: 20Gi\n", map[string]any{"sizeLimit": "5Gi"}, "256Mi"},
		{"a memory emptyDir keeps its medium", "dataVolume: {emptyDir: {medium: Memory}}\n", map[string]any{"medium": "Memory", "sizeLimit": "2Gi"}, "256Mi"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vols := volumeByName(t, workerPods(t, mustRender(t, workerChart, tc.values))["Deployment"])
			require.Equal(t, tc.data, vols["data"]["emptyDir"])
			require.Equal(t, map[string]any{"sizeLimit": tc.tmp}, vols["tmp"]["emptyDir"])
		})
	}
	t.Run("a claim has no emptyDir", func(t *testing.T) {
		vols := volumeByName(t, workerPods(t, mustRender(t, workerChart, "dataVolume: {persistentVolumeClaim: {claimName: lake}}\n"))["Deployment"])
		require.NotContains(t, vols["data"], "emptyDir")
		require.Equal(t, map[string]any{"claimName": "lake"}, vols["data"]["persistentVolumeClaim"])
	})
}

// TestChartMapsValuesToVariables checks which value feeds which PHILOTES_* variable: with a distinct value for each
// value the chart passes to the worker, the ConfigMap holds exactly these variables with these values, and the
// container's variables from Secrets name these Secret keys. A variable the chart adds, drops or feeds from another
// value fails here. Whether each name is a variable the worker reads is not this test's question: the root module's
// TestEveryNamedVariableIsASetting (internal/config/contract_test.go) holds every PHILOTES_* name in the charts'
// templates, values and READMEs to the worker's settings.
func TestChartMapsValuesToVariables(t *testing.T) {
	r := mustRender(t, workerChart, `
database: {existingSecret: db-urls, sourceUrlKey: source-url, bufferUrlKey: buffer-url}
worker:
  slot: slot_a
  publication: pub_b
  sourceName: source_c
  tables: [public.orders, sales.items]
  processors: 3
  batchSize: 777
  logLevel: debug
  shutdownTimeoutSeconds: 17
  httpPort: 9091
  iceberg:
    warehouse: s3://lake-d/prefix
    catalogUri: http://lakekeeper:8181/catalog
    catalogWarehouse: lake_e
    namespace: ns_f
    commitIntervalSeconds: 7
    commitBytes: 1000001
    maintenanceIntervalSeconds: 45
    snapshotRetention: 2h
    snapshotsToKeep: 9
    targetFileBytes: 2000002
    s3: {endpoint: 'http://minio:9000', region: eu-west-3, pathStyle: true, existingSecret: s3-keys,
         accessKeyIdKey: key-id, secretAccessKeyKey: secret-key, sessionTokenKey: token}
  backfill: {mode: "off", workers: 4, chunkRows: 5000, maxRowsPerSecond: 1234}
`)
	require.Equal(t, map[string]any{
		"PHILOTES_SLOT":                         "slot_a",                         // worker.slot
		"PHILOTES_PUBLICATION":                  "pub_b",                          // worker.publication
		"PHILOTES_SOURCE_NAME":                  "source_c",                       // worker.sourceName (default: worker.slot)
		"PHILOTES_TABLES":                       "public.orders,sales.items",      // worker.tables, comma-separated
		"PHILOTES_PROCESSORS":                   "3",                              // worker.processors
		"PHILOTES_BATCH_SIZE":                   "777",                            // worker.batchSize
		"PHILOTES_LOG_LEVEL":                    "debug",                          // worker.logLevel
		"PHILOTES_SHUTDOWN_TIMEOUT":             "17s",                            // worker.shutdownTimeoutSeconds
		"PHILOTES_HTTP_ADDR":                    ":9091",                          // worker.httpPort
		"PHILOTES_ICEBERG_WAREHOUSE":            "s3://lake-d/prefix",             // worker.iceberg.warehouse
		"PHILOTES_ICEBERG_CATALOG_URI":          "http://lakekeeper:8181/catalog", // worker.iceberg.catalogUri
		"PHILOTES_ICEBERG_CATALOG_WAREHOUSE":    "lake_e",                         // worker.iceberg.catalogWarehouse
		"PHILOTES_ICEBERG_NAMESPACE":            "ns_f",                           // worker.iceberg.namespace
		"PHILOTES_ICEBERG_COMMIT_INTERVAL":      "7s",                             // worker.iceberg.commitIntervalSeconds
		"PHILOTES_ICEBERG_COMMIT_BYTES":         "1000001",                        // worker.iceberg.commitBytes
		"PHILOTES_ICEBERG_MAINTENANCE_INTERVAL": "45s",                            // worker.iceberg.maintenanceIntervalSeconds
		"PHILOTES_ICEBERG_SNAPSHOT_RETENTION":   "2h",                             // worker.iceberg.snapshotRetention
		"PHILOTES_ICEBERG_SNAPSHOTS_TO_KEEP":    "9",                              // worker.iceberg.snapshotsToKeep
		"PHILOTES_ICEBERG_TARGET_FILE_BYTES":    "2000002",                        // worker.iceberg.targetFileBytes
		"PHILOTES_S3_ENDPOINT":                  "http://minio:9000",              // worker.iceberg.s3.endpoint
		"PHILOTES_S3_REGION":                    "eu-west-3",                      // worker.iceberg.s3.region
		"PHILOTES_S3_PATH_STYLE":                "true",                           // worker.iceberg.s3.pathStyle
		"PHILOTES_BACKFILL":                     "off",                            // worker.backfill.mode
		"PHILOTES_BACKFILL_WORKERS":             "4",                              // worker.backfill.workers
		"PHILOTES_BACKFILL_CHUNK_ROWS":          "5000",                           // worker.backfill.chunkRows
		"PHILOTES_BACKFILL_MAX_ROWS_PER_SECOND": "1234",                           // worker.backfill.maxRowsPerSecond
	}, get(t, r.one(t, "ConfigMap", fullname), "data"))

	fromSecrets := map[string]string{}
	for n, e := range envByName(t, workerPods(t, r)["Deployment"]) {
		ref := get(t, e, "valueFrom", "secretKeyRef")
		fromSecrets[n] = fmt.Sprintf("%s/%s", get(t, ref, "name"), get(t, ref, "key"))
	}
	require.Equal(t, map[string]string{
		"PHILOTES_SOURCE_URL":           "db-urls/source-url", // database.existingSecret, database.sourceUrlKey
		"PHILOTES_BUFFER_URL":           "db-urls/buffer-url", // database.existingSecret, database.bufferUrlKey
		"PHILOTES_S3_ACCESS_KEY_ID":     "s3-keys/key-id",     // worker.iceberg.s3.existingSecret, accessKeyIdKey
		"PHILOTES_S3_SECRET_ACCESS_KEY": "s3-keys/secret-key", // worker.iceberg.s3.existingSecret, secretAccessKeyKey
		"PHILOTES_S3_SESSION_TOKEN":     "s3-keys/token",      // worker.iceberg.s3.existingSecret, sessionTokenKey
	}, fromSecrets)
}

// requireConfigMap renders the worker chart with values (YAML), or with set when it is not nil (as --set
// would pass them), and requires each variable of want in its ConfigMap with that value.
func requireConfigMap(t *testing.T, values string, set map[string]any, want map[string]string) {
	t.Helper()
	var r *Rendered
	if set != nil {
		r = mustRenderValues(t, workerChart, set)
	} else {
		r = mustRender(t, workerChart, values)
	}
	cm := get(t, r.one(t, "ConfigMap", fullname), "data").(map[string]any)
	for k, v := range want {
		require.Contains(t, cm, k)
		require.Equal(t, v, cm[k], k)
	}
}
