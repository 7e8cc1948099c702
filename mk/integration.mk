# The offline test image and the QEMU-booted integration tests (tests/integration/).

HELP_LINES += '' 'Offline test image: Debian, the project files and engine doubles, no Buildroot build' \
	'  test-image               build or reuse the test images, INITS=systemd sysv' \
	'  try                      boot the test image here with the agent on 127.0.0.1:7001, INIT=systemd or sysv'

TEST_IMAGE = $(PYTHON) scripts/test-image/testimage.py
INITS ?= systemd sysv
INIT ?= systemd

.PHONY: test-image try

test-image: venv buildroot
	for init in $(INITS); do $(TEST_IMAGE) build --init $$init || exit 1; done

try: venv buildroot
	$(TEST_IMAGE) try --init $(INIT)
