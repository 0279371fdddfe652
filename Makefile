# The commands a developer and CI use. Each one installs what it needs.

CARGO ?= cargo

.PHONY: test lint crds check

## Run every test of the workspace (after putting the real test models in .dev/models).
test:
	scripts/fetch-test-models.sh
	$(CARGO) test --workspace

## Formatting and lints, as CI runs them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Regenerate the checked-in CRDs (crds/ and the chart's copy) from crates/blaze-api.
crds:
	$(CARGO) run -q -p blaze -- crds --output-dir crds
	$(CARGO) run -q -p blaze -- crds --output-dir charts/blaze/crds

check: lint test
