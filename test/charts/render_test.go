package charts

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	"sigs.k8s.io/yaml"
)

const (
	workerChart   = "../../charts/philotes-worker"
	umbrellaChart = "../../charts/philotes"
	releaseName   = "cdc"
	releaseNS     = "data"
	fullname      = "cdc-philotes-worker"
	kubeVersion   = "v1.37.2"
)

// Rendered is the output of one `helm install --dry-run=client`.
type Rendered struct {
	Objects  []map[string]any
	Notes    string
	Manifest string
}

// loadChart loads a chart from its folder. The umbrella gets philotes-worker attached as its dependency, which is
// what `helm dependency build` does for the file://../philotes-worker repository.
func loadChart(dir string) (*chart.Chart, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, err
	}
	if filepath.Base(dir) == "philotes" {
		worker, err := loader.Load(workerChart)
		if err != nil {
			return nil, err
		}
		ch.SetDependencies(worker)
	}
	return ch, nil
}

// testSourceURL is the source database of every test release whose values do not set database.sourceUrl: the worker
// chart refuses to render without a source database (database.sourceUrl or database.existingSecret), as it must for
// a real release. A test of that refusal sets database.sourceUrl to "" itself.
const testSourceURL = "postgres://replicator@source-db:5432/app"

// withSourceDB returns vals on top of values that give the release testSourceURL (for the umbrella, under
// philotes-worker): values that set database.* themselves win.
func withSourceDB(dir string, vals map[string]any) map[string]any {
	base := map[string]any{"database": map[string]any{"sourceUrl": testSourceURL}}
	if filepath.Base(dir) == "philotes" {
		base = map[string]any{"philotes-worker": base}
	}
	return mergeMaps(base, vals)
}

// renderValues renders a chart with values given as a map (numbers as int64, like --set) the way
// `helm template` does: install with client dry run, schema validation on. The release gets testSourceURL unless
// the values set the source database (see withSourceDB).
func renderValues(dir string, vals map[string]any) (*Rendered, error) {
	vals = withSourceDB(dir, vals)
	ch, err := loadChart(dir)
	if err != nil {
		return nil, err
	}
	install := action.NewInstall(action.NewConfiguration())
	install.DryRunStrategy = action.DryRunClient
	install.Replace = true
	install.ReleaseName = releaseName
	install.Namespace = releaseNS
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	install.KubeVersion = kv
	rel, err := install.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("unexpected release type %T", rel)
	}
	objs, err := splitManifest(r.Manifest)
	if err != nil {
		return nil, err
	}
	return &Rendered{Objects: objs, Notes: r.Info.Notes, Manifest: r.Manifest}, nil
}

// render renders a chart with values given as YAML text, parsed like a values file (numbers arrive as float64). A
// key repeated in the text is an error (a silent "last one wins" would drop half a test's values): combine values
// that share a top-level key with mergeValues.
func render(dir, valuesYAML string) (*Rendered, error) {
	vals := map[string]any{}
	if err := yaml.UnmarshalStrict([]byte(valuesYAML), &vals); err != nil {
		return nil, fmt.Errorf("test values: %w", err)
	}
	return renderValues(dir, vals)
}

// s3Warehouse is the object-storage warehouse of the test values. Every release that runs more than one pod (KEDA,
// the ScaledJob, the HPA, replicaCount above 1, the backfill Job next to the Deployment) needs one, as real users
// do: the chart refuses a file:// warehouse on per-pod volumes there.
const s3Warehouse = "s3://philotes-lake/warehouse"

// s3Lake is s3Warehouse as values-file text.
const s3Lake = "worker:\n  iceberg:\n    warehouse: " + s3Warehouse + "\n"

// s3LakeMap is s3Warehouse as --set style values, to merge into a map with mergeMaps.
func s3LakeMap() map[string]any {
	return map[string]any{"worker": map[string]any{"iceberg": map[string]any{"warehouse": s3Warehouse}}}
}

// mergeValues deep-merges values files given as YAML text (later ones win), for values that set keys under the same
// top-level key, e.g. a worker setting next to s3Lake. It panics on YAML that does not parse (a broken test).
func mergeValues(docs ...string) string {
	out := map[string]any{}
	for _, d := range docs {
		m := map[string]any{}
		if err := yaml.UnmarshalStrict([]byte(d), &m); err != nil {
			panic(fmt.Sprintf("test values %q: %v", d, err))
		}
		out = mergeMaps(out, m)
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// mergeMaps deep-merges src into dst (src wins) and returns dst.
func mergeMaps(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = mergeMaps(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func splitManifest(manifest string) ([]map[string]any, error) {
	var objs []map[string]any
	for _, doc := range strings.Split(manifest, "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		obj := map[string]any{}
		if err := yaml.UnmarshalStrict([]byte(doc), &obj); err != nil {
			return nil, fmt.Errorf("rendered YAML does not parse: %w\n%s", err, doc)
		}
		if len(obj) == 0 {
			continue
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// mustRender renders, requires success, and validates every object strictly against the Kubernetes and CRD
// schemas.
func mustRender(t *testing.T, dir, valuesYAML string) *Rendered {
	t.Helper()
	r, err := render(dir, valuesYAML)
	require.NoError(t, err, "render %s with values:\n%s", dir, valuesYAML)
	requireValid(t, r)
	return r
}

// mustRenderValues is mustRender for values given as a map.
func mustRenderValues(t *testing.T, dir string, vals map[string]any) *Rendered {
	t.Helper()
	r, err := renderValues(dir, vals)
	require.NoError(t, err)
	requireValid(t, r)
	return r
}

func requireValid(t *testing.T, r *Rendered) {
	t.Helper()
	v, err := sharedValidator()
	require.NoError(t, err, "loading the Kubernetes and KEDA schemas")
	require.NotEmpty(t, r.Objects)
	for _, obj := range r.Objects {
		require.NoError(t, v.Validate(obj))
	}
}

// renderErr renders and requires an error.
// refusal is a values file the worker chart must refuse, and what its error must name.
type refusal struct {
	name, values string
	want         []string
}

// requireRefused renders each case and checks that the worker chart refuses it with an error naming each want.
func requireRefused(t *testing.T, prefix string, cases []refusal) {
	t.Helper()
	for _, tc := range cases {
		t.Run(prefix+tc.name, func(t *testing.T) {
			err := renderErr(t, workerChart, tc.values)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func renderErr(t *testing.T, dir, valuesYAML string) error {
	t.Helper()
	_, err := render(dir, valuesYAML)
	require.Error(t, err, "expected %s to refuse values:\n%s", dir, valuesYAML)
	return err
}

// find returns the objects of a kind.
func (r *Rendered) find(kind string) []map[string]any {
	var out []map[string]any
	for _, o := range r.Objects {
		if o["kind"] == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the single object of a kind and name (name "" matches any).
func (r *Rendered) one(t *testing.T, kind, objName string) map[string]any {
	t.Helper()
	var out []map[string]any
	for _, o := range r.find(kind) {
		if objName == "" || name(o) == objName {
			out = append(out, o)
		}
	}
	require.Len(t, out, 1, "want exactly one %s %q", kind, objName)
	return out[0]
}

// get walks a path of map keys and list indexes.
func get(t *testing.T, obj any, path ...any) any {
	t.Helper()
	cur := obj
	for i, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			require.True(t, ok, "path %v: element %d is not a map", path, i)
			v, ok := m[k]
			require.True(t, ok, "path %v: key %q missing", path, k)
			cur = v
		case int:
			l, ok := cur.([]any)
			require.True(t, ok, "path %v: element %d is not a list", path, i)
			require.Less(t, k, len(l), "path %v: index out of range", path)
			cur = l[k]
		}
	}
	return cur
}

// has reports whether a path of map keys exists.
func has(obj any, path ...string) bool {
	cur := obj
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[k]; !ok {
			return false
		}
	}
	return true
}

// triggers returns the (single) ScaledObject's triggers keyed by name.
func triggers(t *testing.T, r *Rendered) map[string]map[string]any {
	t.Helper()
	so := r.one(t, "ScaledObject", "")
	out := map[string]map[string]any{}
	for _, tr := range get(t, so, "spec", "triggers").([]any) {
		m := tr.(map[string]any)
		n, _ := m["name"].(string)
		out[n] = m
	}
	return out
}

// metadata returns a trigger's metadata as strings (KEDA wants strings; anything else fails the test).
func metadata(t *testing.T, trigger map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range trigger["metadata"].(map[string]any) {
		s, ok := v.(string)
		require.True(t, ok, "trigger metadata %s is %T, KEDA wants a string", k, v)
		out[k] = s
	}
	return out
}

// readFile reads a repository file relative to this folder.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
