#!/usr/bin/env bash
# Build the pinned Go tools (hack/tools.env) into a cache outside the source tree.
#
#   hack/tools.sh            build whatever is missing, install HAProxy if missing, print
#                            the tools directory
#   hack/tools.sh dir        print the directory only (nothing is built)
#   hack/tools.sh haproxy    only install HAProxy (Debian's package) if it is missing
#   hack/tools.sh kyverno    only Kyverno's admission controller, for the side-by-side
#                            benchmark (bench/kyverno.py); never built for the tests
#   hack/tools.sh node       what `NODE=1` needs besides the default tools (docs/node.md):
#                            kubelet and kube-scheduler (same Kubernetes version as the
#                            apiserver), and containerd, runc, busybox-static,
#                            containernetworking-plugins and mmdebstrap from Debian if
#                            missing; the default build builds neither
#
# Layout: $KITPIN_TOOLS_CACHE/<tool>-<version>/<binary>; a build is reused when present.
# KITPIN_TOOLS_DIR (a directory holding the binaries, e.g. envtest's) skips the build
# for every binary found there.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=/dev/null
. "$here/tools.env"
cache=${KITPIN_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kitpin/tools}
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

log() { printf 'tools: %s\n' "$*" >&2; }

have() { # have BINARY DIR
  [ -n "${KITPIN_TOOLS_DIR:-}" ] && [ -x "$KITPIN_TOOLS_DIR/$1" ] && return 0
  [ -x "$2/$1" ]
}

# wrapper_module DIR MODULE@VERSION: a throwaway module that requires MODULE.
wrapper_module() {
  rm -rf "$1" && mkdir -p "$1"
  (cd "$1" && go mod init kitpin.dev/toolbuild >/dev/null 2>&1)
}

# build_kubernetes [BINARY...]: the Kubernetes binaries (default kube-apiserver,
# kube-controller-manager, kubectl; `node` adds kube-scheduler and kubelet), all from the one
# k8s.io/kubernetes module version, so a node runs the apiserver's version.
build_kubernetes() {
  local v=$KUBERNETES_VERSION out="$cache/kubernetes-$KUBERNETES_VERSION"
  local bins=() b wanted=("$@")
  [ ${#wanted[@]} -eq 0 ] && wanted=(kube-apiserver kube-controller-manager kubectl)
  for b in "${wanted[@]}"; do have "$b" "$out" || bins+=("$b"); done
  [ ${#bins[@]} -eq 0 ] && return
  log "building ${bins[*]} $v (several minutes cold)"
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  wrapper_module "$work"
  local gomod minor="${v#v1.}"; minor=${minor%%.*}
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # Every staging module k8s.io/kubernetes requires at v0.0.0 is replaced by its published v0.MINOR.PATCH.
  local staging; staging=$(python3 - "$gomod" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
print(" ".join(sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", text, re.M)))))
PY
)
  local patch="v0.${v#v1.}"
  (
    cd "$work"
    local args=()
    for m in $staging; do args+=("-replace=$m=$m@$patch"); done
    go mod edit "${args[@]}"
    go get "k8s.io/kubernetes@$v" >/dev/null 2>&1 || go get "k8s.io/kubernetes@$v"
    {
      printf '//go:build tools\n\npackage tools\n\nimport (\n'
      for b in "${bins[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
      printf ')\n'
    } > tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    local ld="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    mkdir -p "$out"
    for b in "${bins[@]}"; do
      go build -trimpath -ldflags "$ld" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$out/$b.tmp" "$out/$b"
    done
  )
}

# build_simple NAME VERSION BINARY PACKAGE: `go get PACKAGE@VERSION` in a throwaway module, then build.
build_simple() {
  local name=$1 v=$2 bin=$3 pkg=$4 out="$cache/$1-$2"
  if have "$bin" "$out"; then return; fi
  log "building $bin $v"
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  wrapper_module "$work"
  (
    cd "$work"
    go get "$pkg@$v" >/dev/null 2>&1 || go get "$pkg@$v"
    mkdir -p "$out.tmp"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/$bin" "$pkg"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# cosign (the signatures kitpin verifies, tests/integration/test_signatures_registry.py): as
# build_simple, with the version stamped in so that `cosign version` reports it.
build_cosign() {
  local v=$COSIGN_VERSION out="$cache/cosign-$COSIGN_VERSION"
  local pkg=github.com/sigstore/cosign/v2/cmd/cosign
  if have cosign "$out"; then return; fi
  log "building cosign $v (a few minutes cold)"
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  wrapper_module "$work"
  (
    cd "$work"
    go get "$pkg@$v" >/dev/null 2>&1 || go get "$pkg@$v"
    mkdir -p "$out.tmp"
    go build -trimpath -o "$out.tmp/cosign" -ldflags "-s -w \
      -X sigs.k8s.io/release-utils/version.gitVersion=$v \
      -X sigs.k8s.io/release-utils/version.gitTreeState=clean" "$pkg"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# helm: as build_simple, with the ldflags helm's own release build sets (its Makefile): its
# version, and the Kubernetes version of the client-go it is built with. Without the latter
# helm assumes Kubernetes v1.20 when no cluster is asked (`helm template`, `helm lint`), below
# the chart's kubeVersion. The directory name says so: a helm cached from the plain build is
# never reused.
build_helm() {
  local v=$HELM_VERSION out="$cache/helm-release-$HELM_VERSION"
  local pkg=helm.sh/helm/v3/cmd/helm
  if have helm "$out"; then return; fi
  log "building helm $v"
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  wrapper_module "$work"
  (
    cd "$work"
    go get "$pkg@$v" >/dev/null 2>&1 || go get "$pkg@$v"
    # client-go vA.B.C is Kubernetes v(A+1).B, as helm's Makefile computes it
    local client_go major minor
    client_go=$(go list -f '{{.Version}}' -m k8s.io/client-go); client_go=${client_go#v}
    major=$(( ${client_go%%.*} + 1 )); minor=${client_go#*.}; minor=${minor%%.*}
    local x=helm.sh/helm/v3
    mkdir -p "$out.tmp"
    go build -trimpath -o "$out.tmp/helm" -ldflags "-s -w \
      -X $x/internal/version.version=$v -X $x/internal/version.gitTreeState=clean \
      -X $x/pkg/lint/rules.k8sVersionMajor=$major -X $x/pkg/lint/rules.k8sVersionMinor=$minor \
      -X $x/pkg/chartutil.k8sVersionMajor=$major -X $x/pkg/chartutil.k8sVersionMinor=$minor" "$pkg"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# Kyverno's admission controller (bench/kyverno.py only; never part of `make test`), built as
# its Makefile builds it (CGO off, its version stamped), in a wrapper module that carries
# Kyverno's own `replace` directives (read from its go.mod: a `go get` of a module ignores
# them, and v1.19 builds only with its fork of k8s.io/pod-security-admission).
build_kyverno() {
  local v=$KYVERNO_VERSION out="$cache/kyverno-$KYVERNO_VERSION"
  local module=github.com/kyverno/kyverno pkg=github.com/kyverno/kyverno/cmd/kyverno
  if have kyverno "$out"; then return; fi
  log "building kyverno $v (several minutes cold)"
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  wrapper_module "$work"
  (
    cd "$work"
    local gomod
    gomod=$(go mod download -json "$module@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    python3 - "$gomod" >> go.mod <<'PY'
import re, sys
text = open(sys.argv[1]).read()
single = re.findall(r"^replace\s+(\S+(?:\s+v\S+)?\s+=>\s+.+)$", text, re.M)
blocks = re.findall(r"^replace\s*\((.*?)^\)", text, re.M | re.S)
lines = single + [l.strip() for b in blocks for l in b.splitlines() if "=>" in l]
print("\n".join(f"replace {l}" for l in lines))
PY
    go get "$module@$v" >/dev/null 2>&1 || go get "$module@$v"
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" > tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    mkdir -p "$out.tmp"
    go build -trimpath -o "$out.tmp/kyverno" \
      -ldflags "-s -w -X $module/pkg/version.BuildVersion=$v" "$pkg"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# HAProxy (the load balancer of the two-replica e2e test) comes from the distribution, not
# from Go. When it is missing and we are root, Debian's package is installed (`apt-get update`
# once, then the install); when it is present, nothing runs and nothing is printed. Otherwise
# say how to get it. Not fatal here: the test that needs it fails with the same advice
# (harness/haproxy.py); it never skips.
haproxy_bin() { PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v haproxy; }
ensure_haproxy() {
  haproxy_bin >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "haproxy is missing; install it (Debian/Ubuntu: sudo apt-get install -y haproxy)"
    return 0
  fi
  log "installing haproxy (apt-get)"
  local out; out=$(mktemp); trap 'rm -f "$out"' RETURN
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy
       } >"$out" 2>&1; then
    cat "$out" >&2; log "apt-get could not install haproxy (output above)"; return 1
  fi
  haproxy_bin >/dev/null || { log "apt-get installed haproxy but it is not on PATH"; return 1; }
}

# The node (`NODE=1`, harness/node.py) runs Debian's containerd and runc, and assembles its
# images from Debian's static busybox; a loopback-only CNI configuration needs the plugins'
# directory. Installed like HAProxy when missing and root; nothing is started: the Debian
# package's service is never run here (no init system starts it, and policy-rc.d says no).
node_packages_missing() {
  local missing=()
  PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v containerd >/dev/null || missing+=(containerd)
  PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v runc >/dev/null || missing+=(runc)
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  [ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)  # kitpin's image (harness/kitpin_image.py)
  echo "${missing[@]}"
}
ensure_node_packages() {
  local missing; missing=$(node_packages_missing)
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "the node needs: $missing (Debian/Ubuntu: sudo apt-get install -y $missing)"
    return 1
  fi
  log "installing $missing (apt-get)"
  local out policy=/usr/sbin/policy-rc.d own_policy=0 ok=1
  out=$(mktemp)
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && own_policy=1
  fi
  # shellcheck disable=SC2086 # a list of package names
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  } >"$out" 2>&1 || ok=0
  [ "$own_policy" = 1 ] && rm -f "$policy"
  if [ "$ok" = 0 ]; then
    cat "$out" >&2; rm -f "$out"; log "apt-get could not install $missing (output above)"; return 1
  fi
  rm -f "$out"
  missing=$(node_packages_missing)
  [ -z "$missing" ] || { log "apt-get ran but still missing: $missing"; return 1; }
}

node=0
case "${1:-build}" in
  dir) echo "$cache"; exit 0 ;;
  haproxy) ensure_haproxy; exit $? ;;
  build) ensure_haproxy ;;
  node) node=1; ensure_haproxy; ensure_node_packages ;;
  kyverno)
    command -v go >/dev/null || { echo "tools: Go is required to build kyverno" >&2; exit 1; }
    mkdir -p "$cache"; build_kyverno; echo "$cache/kyverno-$KYVERNO_VERSION"; exit 0 ;;
  *) echo "usage: hack/tools.sh [build|dir|haproxy|node|kyverno]" >&2; exit 2 ;;
esac

command -v go >/dev/null || { echo "tools: Go is required to build the tools (or set KITPIN_TOOLS_DIR)" >&2; exit 1; }
mkdir -p "$cache"
start=$(date +%s)
build_simple etcd "$ETCD_VERSION" etcd go.etcd.io/etcd/server/v3
build_simple registry "$DISTRIBUTION_VERSION" registry github.com/distribution/distribution/v3/cmd/registry
build_helm
build_cosign
if [ "$node" = 1 ]; then
  build_kubernetes kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet
else
  build_kubernetes
fi
log "tools ready in $cache ($(( $(date +%s) - start ))s)"
echo "$cache"
