#!/bin/sh
# Installs a kubectl >= 1.27 for capstan-apiserver's kubectl tests when none is on PATH.
# Preferred: build kubectl 1.32 from Go modules (k8s.io/kubectl's command in a wrapper module);
# fallback: Debian's kubernetes-client (1.20 on bookworm: too old for `kubectl explain` via
# OpenAPI v3, so the Go build is preferred).
set -eu
DEST="${KUBECTL_DEST:-/usr/local/bin/kubectl}"
VERSION="${KUBECTL_GO_VERSION:-v0.32.4}"
if command -v kubectl >/dev/null 2>&1; then
    minor=$(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
    if [ "${minor:-0}" -ge 27 ]; then exit 0; fi
fi
if command -v go >/dev/null 2>&1; then
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    cat > "$dir/main.go" <<'GO'
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
GO
    (cd "$dir" && go mod init capstan.dev/kubectl >/dev/null 2>&1 \
        && go get "k8s.io/kubectl@$VERSION" "k8s.io/component-base@$VERSION" >/dev/null \
        && go mod tidy >/dev/null && go build -o "$DEST" .)
    exit 0
fi
apt-get update -qq && apt-get install -y -qq kubernetes-client
