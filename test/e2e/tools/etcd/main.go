// Command etcd is a thin wrapper that builds etcd's server from the Go module
// proxy: go install refuses go.etcd.io/etcd/server/v3 because its go.mod has
// replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
