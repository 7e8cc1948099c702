# The image's software bill of materials (issue 17): Buildroot's own
# utils/generate-cyclonedx over show-info, for the configuration in O=.
# generate-cyclonedx downloads CycloneDX's SPDX license list once, into
# $(BR2_DL_DIR)/cyclonedx/ (Buildroot's dl/ unless BR2_DL_DIR is set in the
# environment): an offline machine needs spdx-1.6.schema.json there.

HELP_LINES += '' 'SBOM:' \
	'  sbom                     CycloneDX SBOM of the configured image -> O/sbom.cdx.json'

SBOM_VERSION = $(shell git describe --always --dirty 2>/dev/null || echo unknown)

.PHONY: sbom

sbom: buildroot
	$(BR_MAKE) -s --no-print-directory show-info > $(O)/show-info.json
	$(BUILDROOT_DIR)/utils/generate-cyclonedx -i $(O)/show-info.json \
		-o $(O)/sbom.cdx.json --project-name cube-hal --project-version $(SBOM_VERSION)
	@echo "sbom: $(O)/sbom.cdx.json"
