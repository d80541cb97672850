package charts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

// Versions of the schemas the rendered objects are validated against. They are read from the Go module cache
// (`go mod download -json`), never copied into the repository.
const (
	kubernetesModule = "k8s.io/kubernetes@v1.37.2"
	kedaModule       = "github.com/kedacore/keda/v2@v2.21.0"
	promOpModule     = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
)

// crdFiles are the CRDs (relative to their module) whose kinds the charts may render.
var crdFiles = map[string][]string{
	kedaModule: {
		"config/crd/bases/keda.sh_scaledobjects.yaml",
		"config/crd/bases/keda.sh_scaledjobs.yaml",
		"config/crd/bases/keda.sh_triggerauthentications.yaml",
		"config/crd/bases/keda.sh_clustertriggerauthentications.yaml",
	},
	promOpModule: {
		"example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
		"example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
		"example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
	},
}

const (
	k8sResourceURL = "https://schemas.philotes.test/k8s.json"
	objectMetaRef  = k8sResourceURL + "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)

// Validator checks Kubernetes objects strictly: every object schema without an explicit additionalProperties (and
// not marked x-kubernetes-preserve-unknown-fields) gets additionalProperties: false, so unknown fields are errors,
// as with `kubectl apply --validate=strict`. A kind without a schema is an error, never a skip.
type Validator struct {
	schemas map[string]*jsonschema.Schema // "apiVersion/Kind"
}

var (
	validatorOnce sync.Once
	validator     *Validator
	validatorErr  error
)

// sharedValidator loads the schemas once per test binary.
func sharedValidator() (*Validator, error) {
	validatorOnce.Do(func() { validator, validatorErr = loadValidator() })
	return validator, validatorErr
}

// moduleDir returns the module's folder in the module cache, downloading it through the module proxy if needed.
func moduleDir(modVersion string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", modVersion)
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr != nil && err == nil {
		err = jerr
	}
	if err != nil || info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download -json %s: %v %s %s", modVersion, err, info.Error, stderr.String())
	}
	return info.Dir, nil
}

// decodeJSON decodes with json.Number, as jsonschema expects.
func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// strictify adds additionalProperties: false to every object schema that lists properties, leaves open maps,
// preserve-unknown-fields and embedded resources alone, and recurses into every sub-schema.
func strictify(node any) {
	switch n := node.(type) {
	case map[string]any:
		_, hasProps := n["properties"]
		_, hasAdditional := n["additionalProperties"]
		preserve, _ := n["x-kubernetes-preserve-unknown-fields"].(bool)
		if hasProps && !hasAdditional && !preserve {
			n["additionalProperties"] = false
		}
		for k, v := range n {
			if k == "enum" || k == "default" || k == "example" || k == "x-kubernetes-validations" {
				continue
			}
			strictify(v)
		}
	case []any:
		for _, v := range n {
			strictify(v)
		}
	}
}

func loadValidator() (*Validator, error) {
	c := jsonschema.NewCompiler()
	// OpenAPI 3.0 schemas are closest to draft 4 (boolean exclusiveMinimum, $ref wrapped in allOf).
	c.DefaultDraft(jsonschema.Draft4)

	// Kubernetes: merge components.schemas of every group-version file into one resource.
	k8sDir, err := moduleDir(kubernetesModule)
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(k8sDir, "api", "openapi-spec", "v3", "*.json"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no OpenAPI v3 files in %s (err %v)", k8sDir, err)
	}
	merged := map[string]any{}
	gvkToName := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		doc, err := decodeJSON(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		comps, _ := doc.(map[string]any)["components"].(map[string]any)
		schemas, _ := comps["schemas"].(map[string]any)
		for name, s := range schemas {
			merged[name] = s
			sm, _ := s.(map[string]any)
			gvks, _ := sm["x-kubernetes-group-version-kind"].([]any)
			for _, g := range gvks {
				gm, _ := g.(map[string]any)
				group, _ := gm["group"].(string)
				version, _ := gm["version"].(string)
				kind, _ := gm["kind"].(string)
				apiVersion := version
				if group != "" {
					apiVersion = group + "/" + version
				}
				// DeleteOptions and friends list many GVKs; keep the schema whose name ends in the kind.
				if strings.HasSuffix(name, "."+kind) {
					gvkToName[apiVersion+"/"+kind] = name
				}
			}
		}
	}
	strictify(merged)
	if err := c.AddResource(k8sResourceURL, map[string]any{"components": map[string]any{"schemas": merged}}); err != nil {
		return nil, err
	}
	refs := map[string]string{}
	for gvk, name := range gvkToName {
		refs[gvk] = k8sResourceURL + "#/components/schemas/" + name
	}

	// CRDs: one resource per served version, with metadata checked as a Kubernetes ObjectMeta.
	for mod, paths := range crdFiles {
		dir, err := moduleDir(mod)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			if err := addCRD(c, filepath.Join(dir, p), refs); err != nil {
				return nil, err
			}
		}
	}

	v := &Validator{schemas: map[string]*jsonschema.Schema{}}
	for gvk, ref := range refs {
		s, err := c.Compile(ref)
		if err != nil {
			return nil, fmt.Errorf("compile %s: %w", gvk, err)
		}
		v.schemas[gvk] = s
	}
	return v, nil
}

func addCRD(c *jsonschema.Compiler, path string, refs map[string]string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	doc, err := decodeJSON(js)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	spec, _ := doc.(map[string]any)["spec"].(map[string]any)
	group, _ := spec["group"].(string)
	kind, _ := spec["names"].(map[string]any)["kind"].(string)
	versions, _ := spec["versions"].([]any)
	if group == "" || kind == "" || len(versions) == 0 {
		return fmt.Errorf("%s: not a CRD with group, kind and versions", path)
	}
	for _, ver := range versions {
		vm, _ := ver.(map[string]any)
		name, _ := vm["name"].(string)
		schema, _ := vm["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)
		if schema == nil {
			return fmt.Errorf("%s: version %s has no openAPIV3Schema", path, name)
		}
		strictify(schema)
		if props, ok := schema["properties"].(map[string]any); ok {
			props["metadata"] = map[string]any{"$ref": objectMetaRef}
		}
		url := fmt.Sprintf("https://schemas.philotes.test/crd/%s/%s/%s.json", group, name, kind)
		if err := c.AddResource(url, schema); err != nil {
			return err
		}
		refs[group+"/"+name+"/"+kind] = url
	}
	return nil
}

// Validate checks one object (as decoded from YAML into map[string]any).
func (v *Validator) Validate(obj map[string]any) error {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	s, ok := v.schemas[apiVersion+"/"+kind]
	if !ok {
		return fmt.Errorf("no schema for %s %s: the validator knows only %d kinds", apiVersion, kind, len(v.schemas))
	}
	js, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	inst, err := decodeJSON(js)
	if err != nil {
		return err
	}
	if err := s.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return fmt.Errorf("%s %s: %s", kind, name(obj), flatten(ve))
		}
		return err
	}
	return nil
}

// Kinds lists the kinds the validator knows, sorted.
func (v *Validator) Kinds() []string {
	out := make([]string, 0, len(v.schemas))
	for k := range v.schemas {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// flatten renders the leaf causes of a validation error, one per line, with their instance locations.
func flatten(ve *jsonschema.ValidationError) string {
	var lines []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			lines = append(lines, fmt.Sprintf("/%s: %s", strings.Join(e.InstanceLocation, "/"), e.Error()))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return strings.Join(lines, "\n")
}

func name(obj map[string]any) string {
	md, _ := obj["metadata"].(map[string]any)
	n, _ := md["name"].(string)
	return n
}
