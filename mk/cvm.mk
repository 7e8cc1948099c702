# Booting the image (plain QEMU, AMD SEV-SNP, Intel TDX) and predicting its SEV-SNP
# launch measurement. Settings are board/cube/launch-vm's variables: make passes the ones
# given on its command line through, e.g. `make run-snp CPUS=4 MEM=8G OVMF=...`.

HELP_LINES += '' 'Run and measure (CPUS= MEM= AGENT_PORT= IMAGE_DIR= OVMF= KERNEL_CMDLINE= EXTRA_ARGS=):' \
	'  run                      boot the image in QEMU (KVM when it works, else TCG)' \
	'  run-snp                  boot it as an AMD SEV-SNP guest (SNP host, QEMU 9.1+)' \
	'  run-tdx                  boot it as an Intel TDX guest (TDX host, QEMU 10.1+)' \
	'  measure                  expected SEV-SNP launch measurement -> images/measurement.json'

# Not exported: other targets read IMAGE_DIR from the environment with their own meaning.
CVM_IMAGE_DIR = $(or $(IMAGE_DIR),$(O)/images)

.PHONY: run run-snp run-tdx measure

run:
	IMAGE_DIR=$(CVM_IMAGE_DIR) board/cube/launch-vm plain

run-snp:
	IMAGE_DIR=$(CVM_IMAGE_DIR) board/cube/launch-vm snp

run-tdx:
	IMAGE_DIR=$(CVM_IMAGE_DIR) board/cube/launch-vm tdx

measure: venv
	IMAGE_DIR=$(CVM_IMAGE_DIR) $(PYTHON) scripts/measure --output $(CVM_IMAGE_DIR)/measurement.json
