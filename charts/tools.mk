# Chart and monitoring tooling, included by the root Makefile: helm, promtool and prometheus in
# .tools/bin (gitignored).
# helm is built from the Go module proxy (about 3 minutes on 2 cores with a cold module cache);
# promtool and the Prometheus server come out of Debian's prometheus package, unpacked without
# installing it (the server scrapes the local stack in tests/e2e/test_prometheus.py).
# kubernetes-validate and PyYAML come from the root pyproject's dev group (make setup).
TOOLS_DIR := .tools
TOOLS_BIN := $(TOOLS_DIR)/bin
HELM_VERSION := v4.3.1
# Debian bookworm's prometheus; if the mirror has moved on to a newer point release, the
# candidate version is taken instead (promtool's rule format is stable across 2.x).
PROMETHEUS_DEB := 2.42.0+ds-5+deb12u1
HELM_STAMP := $(TOOLS_DIR)/.helm-$(HELM_VERSION)
PROMTOOL_STAMP := $(TOOLS_DIR)/.prometheus-$(PROMETHEUS_DEB)

$(HELM_STAMP):
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(CURDIR)/$(TOOLS_BIN) go install \
	  -ldflags '-X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)' \
	  helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	@rm -f $(TOOLS_DIR)/.helm-* && touch $@

$(PROMTOOL_STAMP):
	@mkdir -p $(TOOLS_BIN)
	@set -e; deb=$$(mktemp -d); trap 'rm -rf "$$deb"' EXIT; cd "$$deb"; \
	  get() { apt-get download -q=2 -o APT::Sandbox::User=root "$$1" >/dev/null 2>&1; }; \
	  get 'prometheus=$(PROMETHEUS_DEB)' || { apt-get update -q=2 >/dev/null && get 'prometheus=$(PROMETHEUS_DEB)'; } \
	    || { echo "prometheus $(PROMETHEUS_DEB) is gone from the mirror: taking the candidate" >&2; get prometheus; }; \
	  dpkg-deb -x prometheus_*.deb root; \
	  install -m 0755 root/usr/bin/promtool root/usr/bin/prometheus $(CURDIR)/$(TOOLS_BIN)/
	$(TOOLS_BIN)/promtool --version | head -1
	$(TOOLS_BIN)/prometheus --version | head -1
	@rm -f $(TOOLS_DIR)/.promtool-* $(TOOLS_DIR)/.prometheus-* && touch $@

chart-tools: $(HELM_STAMP) $(PROMTOOL_STAMP) ## Install helm, promtool and prometheus into .tools/bin

chart-test: setup chart-tools ## Lint, render and validate the Helm chart; promtool on the alerts
	$(PY) -m pytest tests/charts -q

.PHONY: chart-tools chart-test
