"""Real local components for tests, `make dev-up` and `make demo`: a control plane
(etcd, kube-apiserver, kube-controller-manager), CNCF distribution registries, a token
issuer, and a ModelKit packer. Nothing here is a mock: every process is the real binary."""
