package charts

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	sigsyaml "sigs.k8s.io/yaml"
)

// compileValuesSchema compiles a chart's values.schema.json.
func compileValuesSchema(t *testing.T, chartDir string) *jsonschema.Schema {
	t.Helper()
	doc, err := decodeJSON([]byte(readFile(t, chartDir+"/values.schema.json")))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource("https://schemas.philotes.test/values.schema.json", doc))
	s, err := c.Compile("https://schemas.philotes.test/values.schema.json")
	require.NoError(t, err)
	return s
}

func valuesInstance(t *testing.T, valuesYAML string) any {
	t.Helper()
	js, err := sigsyaml.YAMLToJSON([]byte(valuesYAML))
	require.NoError(t, err)
	v, err := decodeJSON(js)
	require.NoError(t, err)
	return v
}

// TestValuesYAMLSatisfiesItsSchema checks that each chart's values files are valid under its values.schema.json.
func TestValuesYAMLSatisfiesItsSchema(t *testing.T) {
	for _, f := range []string{workerChart + "/values.yaml", umbrellaChart + "/values.yaml", umbrellaChart + "/values-dev.yaml", umbrellaChart + "/values-production.yaml"} {
		t.Run(f, func(t *testing.T) {
			dir := umbrellaChart
			if strings.HasPrefix(f, workerChart) {
				dir = workerChart
			}
			require.NoError(t, compileValuesSchema(t, dir).Validate(valuesInstance(t, readFile(t, f))))
		})
	}
}

// TestValuesSchemaIsClosed checks that the schema refuses unknown keys at the top level and in every object with
// declared properties, so a typo in a values file is an error rather than silently ignored.
func TestValuesSchemaIsClosed(t *testing.T) {
	for _, dir := range []string{workerChart, umbrellaChart} {
		t.Run(dir, func(t *testing.T) { requireClosedSchema(t, dir) })
	}
	require.Error(t, compileValuesSchema(t, workerChart).Validate(valuesInstance(t, "keda: {minReplica: 0}\n")))
	require.Error(t, compileValuesSchema(t, umbrellaChart).Validate(valuesInstance(t, "philotes-wroker: {}\n")))
}

func requireClosedSchema(t *testing.T, dir string) {
	t.Helper()
	raw := map[string]any{}
	require.NoError(t, json.Unmarshal([]byte(readFile(t, dir+"/values.schema.json")), &raw))
	var open []string
	var walk func(path string, n any)
	walk = func(path string, n any) {
		switch v := n.(type) {
		case map[string]any:
			if _, ok := v["properties"]; ok {
				if ap, ok := v["additionalProperties"]; !ok || ap != false {
					open = append(open, path)
				}
			}
			for k, c := range v {
				walk(path+"/"+k, c)
			}
		case []any:
			for _, c := range v {
				walk(path+"/[]", c)
			}
		}
	}
	walk("", raw)
	require.Empty(t, open, "objects with properties but without additionalProperties: false")
}

// TestEveryValueIsDocumented checks that every key in values.yaml has a `# --` comment, or sits under a key that
// has one (documented as a whole), so the generated README lists it.
func TestEveryValueIsDocumented(t *testing.T) {
	for _, file := range []string{workerChart + "/values.yaml", umbrellaChart + "/values.yaml"} {
		t.Run(file, func(t *testing.T) {
			var doc yaml.Node
			require.NoError(t, yaml.Unmarshal([]byte(readFile(t, file)), &doc))
			var missing []string
			var walk func(path string, n *yaml.Node, documented bool)
			walk = func(path string, n *yaml.Node, documented bool) {
				if n.Kind != yaml.MappingNode {
					return
				}
				for i := 0; i+1 < len(n.Content); i += 2 {
					k, v := n.Content[i], n.Content[i+1]
					p := strings.TrimPrefix(path+"."+k.Value, ".")
					doc := documented || strings.Contains(k.HeadComment, "# --")
					if v.Kind == yaml.MappingNode && len(v.Content) > 0 && !strings.Contains(k.HeadComment, "# --") {
						walk(p, v, documented)
						continue
					}
					if !doc {
						missing = append(missing, p)
					}
				}
			}
			walk("", doc.Content[0], false)
			require.Empty(t, missing, "values without a `# --` comment")
		})
	}
}
