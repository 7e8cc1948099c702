"""A synthetic OVMF image with the SEV-SNP metadata that sev-snp-measure reads (test fixture).

Debian bookworm's `ovmf` package ships only OvmfPkgX64 builds: they carry the SEV metadata
(`/usr/share/ovmf/OVMF.fd` measures fine without a kernel) but no SNP_KERNEL_HASHES section,
which `kernel-hashes=on` needs; that section exists only in OvmfPkg/AmdSev/AmdSevX64 builds,
which cannot be built or downloaded here. This writes a small firmware-shaped file with the
same structures edk2 puts at the end of an AmdSev build:

* the GUIDed footer table that ends 32 bytes before the end of the image
  (edk2 OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm), each entry laid out as
  `data | u16 size | GUID` and read backwards from the footer entry;
* entries for the SEV-ES reset block (AP reset address), the SEV hash table (GPA, size)
  and the SEV metadata (offset of the "ASEV" header from the end of the image);
* the "ASEV" metadata (OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm): version 1 and
  sections (GPA, size, type) for pre-validated memory, the secrets page, the CPUID page
  and the kernel-hashes page.

The GPAs are AmdSevX64-like but arbitrary; the content is a fixed filler, so the file
(and every measurement made with it) is the same on every run. It boots nothing.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

FOOTER_GUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
SEV_ES_RESET_BLOCK_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
SEV_HASH_TABLE_RV_GUID = "7255371f-3a3b-4b04-927b-1da6efa8d454"
SEV_METADATA_GUID = "dc886566-984a-4798-a75e-5585a7bf67cc"

SNP_SEC_MEM, SNP_SECRETS, CPUID, SNP_KERNEL_HASHES = 1, 2, 3, 0x10
HASHES_PAGE = 0x80B000
SECTIONS = [
    (0x800000, 0x9000, SNP_SEC_MEM),
    (0x809000, 0x1000, SNP_SECRETS),
    (0x80A000, 0x1000, CPUID),
    (HASHES_PAGE, 0x1000, SNP_KERNEL_HASHES),
]
SIZE = 64 * 1024
METADATA_FROM_END = 0x800


def _entry(guid: str, data: bytes) -> bytes:
    return data + struct.pack("<H", len(data) + 18) + uuid.UUID(guid).bytes_le


def image(kernel_hashes: bool = True) -> bytes:
    sections = [s for s in SECTIONS if kernel_hashes or s[2] != SNP_KERNEL_HASHES]
    metadata = struct.pack("<4sIII", b"ASEV", 16 + 12 * len(sections), 1, len(sections))
    metadata += b"".join(struct.pack("<III", *s) for s in sections)

    entries = _entry(SEV_ES_RESET_BLOCK_GUID, struct.pack("<I", 0xFFFFF000))
    entries += _entry(SEV_METADATA_GUID, struct.pack("<I", METADATA_FROM_END))
    if kernel_hashes:
        entries += _entry(SEV_HASH_TABLE_RV_GUID, struct.pack("<II", HASHES_PAGE, 0x400))
    footer = struct.pack("<H", len(entries) + 18) + uuid.UUID(FOOTER_GUID).bytes_le
    table = entries + footer

    data = bytearray(b"CUBE-TEST-OVMF\x00\x00" * (SIZE // 16))
    data[SIZE - METADATA_FROM_END : SIZE - METADATA_FROM_END + len(metadata)] = metadata
    data[SIZE - 32 - len(table) : SIZE - 32] = table
    data[SIZE - 32 :] = bytes(32)  # the reset vector lives here in a real image
    return bytes(data)


def write(path: Path, kernel_hashes: bool = True) -> Path:
    path.write_bytes(image(kernel_hashes))
    return path
