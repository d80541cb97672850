package config

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// settingsByEnv is every setting of every command by its variable.
func settingsByEnv() map[string]Setting {
	out := map[string]Setting{}
	for _, mode := range []Mode{Run, Drain, Backfill} {
		for _, st := range Settings(mode) {
			if st.Env != "" {
				out[st.Env] = st
			}
		}
	}
	return out
}

var envName = regexp.MustCompile(`PHILOTES_[A-Z0-9_]*[A-Z0-9]`)

// docs/worker-interface.md's environment table has a row for every setting and none for a variable the worker
// does not read, and a default it shows as a literal is the worker's default.
func TestDocumentedSettingsAreTheWorkersOnes(t *testing.T) {
	settings := settingsByEnv()
	doc, err := os.ReadFile("../../docs/worker-interface.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "\n## Environment\n")
	require.True(t, ok, "docs/worker-interface.md has an Environment section")
	section, _, _ = strings.Cut(section, "\n## ")
	var documented []string
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, " | ")
		if !strings.HasPrefix(line, "| `PHILOTES_") || len(cells) < 3 {
			continue
		}
		names := envName.FindAllString(cells[0], -1)
		documented = append(documented, names...)
		def := strings.TrimSpace(cells[1])
		for _, name := range names {
			st, ok := settings[name]
			require.True(t, ok, "docs/worker-interface.md documents %s, which the worker does not read", name)
			if strings.HasPrefix(def, "`") && strings.HasSuffix(def, "`") && strings.Count(def, "`") == 2 {
				require.True(t, sameDefault(st.Default, strings.Trim(def, "`")), "default of %s: the worker's is %q, the doc's %s", name, st.Default, def)
			}
		}
	}
	var want []string
	for name := range settings {
		want = append(want, name)
	}
	slices.Sort(want)
	slices.Sort(documented)
	require.Equal(t, want, slices.Compact(documented), "docs/worker-interface.md's environment table against config.Settings")
}

// sameDefault compares a flag's default with the doc's: equal, or the same duration written differently (5m0s, 5m).
func sameDefault(flag, doc string) bool {
	if flag == doc {
		return true
	}
	a, errA := time.ParseDuration(flag)
	b, errB := time.ParseDuration(doc)
	return errA == nil && errB == nil && a == b
}

// Every PHILOTES_* variable the charts, the READMEs and the docs name is one the worker reads.
func TestEveryNamedVariableIsASetting(t *testing.T) {
	settings := settingsByEnv()
	var files []string
	for _, glob := range []string{"../../README.md", "../../docs/*.md", "../../charts/*/README.md", "../../charts/*/values*.yaml",
		"../../charts/*/templates/*", "../../charts/*/templates/*/*"} {
		m, err := filepath.Glob(glob)
		require.NoError(t, err)
		files = append(files, m...)
	}
	require.NotEmpty(t, files)
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.IsDir() {
			continue // templates/lib: its files match the next pattern
		}
		text, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, name := range envName.FindAllString(string(text), -1) {
			_, ok := settings[name]
			require.True(t, ok, "%s names %s, which the worker does not read", f, name)
		}
	}
}
