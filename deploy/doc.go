// Package deploy holds no program code. Its tests check the deployment files
// without a cluster or a Docker engine: the Helm chart in helm/wasmwiz (linted
// and rendered by a pinned helm built from the Go module proxy), the plain
// manifests in k8s/, the Dockerfiles, .dockerignore, the compose files, and the
// operations scripts in ../scripts (backup and restore against the local
// PostgreSQL). Everything rendered is decoded strictly into the Kubernetes API
// types, so a misspelt field fails here rather than on a cluster.
package deploy
