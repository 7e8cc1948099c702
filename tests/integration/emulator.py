"""One QEMU guest on a serial console, driven with pexpect.

In the spirit of Buildroot's support/testing/infra/emulator.py: the class starts QEMU
(through board/cube/launch-vm, the launcher `make run` and `make try` use), logs every
console byte to a file, logs in, and runs shell commands through a private prompt,
returning (output, exit status). Every timeout is multiplied by CUBE_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pexpect
from support.timing import scaled

PROMPT = "CUBE-TEST-PROMPT# "
# Set in two quoted halves so the echo of the command that sets it never matches.
PROMPT_SETTING = "PS1='CUBE-TEST''-PROMPT# ' PS2=''"
# The guest's shell prompt after an automatic root login (bash, dash or busybox sh, whose
# line editor asks the terminal for the cursor position right after the prompt).
ROOT_SHELL = re.compile(r"[#$] (\x1b\[6n)?$")
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# The guest kernel's last words: waiting on after them only runs into a timeout.
PANIC = "Kernel panic - not syncing"
# Multi-threaded TCG (QEMU 7.2 here) races the kernel's live code patching: a vCPU can run
# a stale translation holding the int3 the patcher put there for a moment, and the kernel
# oopses in a function it never broke ("Oops: int3" at a static-key site, seen in CI
# about once in ten boots). KVM and real CVMs run the patched code: an emulator fault, so
# that boot is tried once more. Anything else that panics fails the test.
TCG_PATCHING_RACE = "Oops: int3"


class GuestError(Exception):
    """The guest did not do what was asked in time; the console log says why."""


class EmulatorRace(GuestError):
    """The boot died of TCG's code-patching race (TCG_PATCHING_RACE), not of the image."""


def clean(text: str) -> str:
    """Console text without carriage returns and terminal escape sequences."""
    return ESCAPE.sub("", text).replace("\r", "")


class Emulator:
    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.log = log_path.open("a", encoding="utf-8", errors="replace")
        self.qemu: pexpect.spawn | None = None
        self.boot_seconds = 0.0

    def start(self) -> None:
        self.log.write(f"\n> starting {' '.join(self.command)}\n")
        self.log.flush()
        self.qemu = pexpect.spawn(
            self.command[0],
            self.command[1:],
            env=self.env,
            encoding="utf-8",
            codec_errors="replace",
            timeout=scaled(30),
            # Wide enough that the guest never wraps a long command line.
            dimensions=(50, 4000),
        )
        self.qemu.logfile_read = self.log

    def boot(self, timeout: float = 240, attempts: int = 2) -> float:
        """Start QEMU and log in; a boot killed by TCG's patching race is tried again."""
        for attempt in range(1, attempts + 1):
            self.start()
            try:
                return self.login(timeout)
            except EmulatorRace:
                self.stop()
                self.log.write(f"\n> TCG code-patching race on boot {attempt}: booting again\n")
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def relaunch(self, timeout: float = 240) -> float:
        """Power the guest off and launch it again: what a reboot is for a confidential VM
        (a new launch, measured again). The state disk is kept when it is a file."""
        assert self.qemu is not None
        self.qemu.sendline("poweroff")
        self.qemu.expect(pexpect.EOF, timeout=scaled(timeout))
        self.stop()
        return self.boot(timeout)

    def login(self, timeout: float = 240) -> float:
        """Wait for the root shell (autologin) or a login prompt; return seconds taken."""
        assert self.qemu is not None
        started = time.monotonic()
        index = self.qemu.expect(
            [r"\(automatic login\)", r"login: ", r"\n[^\n]*# ", PANIC],
            timeout=scaled(timeout),
        )
        if index == 3:
            self._died()
        if index == 1 and self.qemu.expect([r"automatic", pexpect.TIMEOUT], timeout=3) == 1:
            self.qemu.sendline("root")
        self._take_shell()
        self.boot_seconds = time.monotonic() - started
        self.log.write(f"\n> logged in after {self.boot_seconds:.0f} s\n")
        return self.boot_seconds

    def _died(self) -> None:
        """The kernel panicked: say so now, with the oops, instead of timing out."""
        assert self.qemu is not None
        # The rest of the oops, up to QEMU's end of it.
        self.qemu.expect([r"end Kernel panic[^\n]*\n", pexpect.TIMEOUT], timeout=scaled(10))
        console = clean(self.qemu.before or "")
        self.log.flush()
        kind = EmulatorRace if TCG_PATCHING_RACE in self.console_text() else GuestError
        raise kind(f"the guest kernel panicked (console: {self.log_path}):\n{console[-2000:]}")

    def console_text(self) -> str:
        """This launch's console so far (the log since the last start)."""
        self.log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[text.rfind("\n> starting ") :]

    def _take_shell(self) -> None:
        """Quiet the console and switch to a prompt no program output can look like."""
        assert self.qemu is not None
        # Kernel messages would land in the middle of command output.
        self.qemu.sendline("")
        self.qemu.expect(ROOT_SHELL, timeout=scaled(60))
        # A plain POSIX shell: no line editor writing escape sequences around the output
        # (dash where there is one: busybox's sh edits lines whenever it is interactive).
        self.qemu.sendline("exec $(command -v dash || echo /bin/sh)")
        self.qemu.expect(ROOT_SHELL, timeout=scaled(30))
        self.qemu.sendline(f"stty -echo -onlcr cols 4000; dmesg -n 1; {PROMPT_SETTING}")
        self.qemu.expect_exact(PROMPT, timeout=scaled(30))
        self.run(f"date -s @{int(time.time())}")

    def run(self, command: str, timeout: float = 30) -> tuple[str, int]:
        """Run one shell command line; return (its output, its exit status)."""
        assert self.qemu is not None
        self.qemu.sendline(command)
        self.qemu.expect_exact(PROMPT, timeout=scaled(timeout))
        output = clean(self.qemu.before)
        self.qemu.sendline("echo $?")
        self.qemu.expect_exact(PROMPT, timeout=scaled(10))
        status = clean(self.qemu.before).strip()
        if not status.isdigit():
            raise GuestError(f"no exit status for {command!r}: {status!r}")
        return output.strip("\n"), int(status)

    def check(self, command: str, timeout: float = 30) -> str:
        """Run a command that must succeed; return its output."""
        output, status = self.run(command, timeout)
        if status != 0:
            raise GuestError(f"{command!r} exited {status}:\n{output}")
        return output

    def wait_for(self, command: str, timeout: float = 60, interval: float = 1) -> str:
        """Poll until the command succeeds; return its last output."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            output, status = self.run(command, timeout)
            if status == 0:
                return output
            if time.monotonic() > deadline:
                raise GuestError(f"{command!r} still exits {status} after {timeout} s:\n{output}")
            time.sleep(interval)

    def stop(self) -> None:
        if self.qemu is not None and self.qemu.isalive():
            self.qemu.terminate(force=True)
        self.qemu = None
        self.log.flush()

    def close(self) -> None:
        self.stop()
        self.log.close()
