"""Registers and spills of a generated module's kernels for a GPU architecture, on a machine without one.

Warp writes a module's PTX without a device (``wp.compile_aot_module(..., arch=90, use_ptx=True)``);
NVIDIA's assembler ``ptxas`` (in the ``nvidia-cuda-nvcc`` wheel, version 13 for Warp 1.19's PTX
ISA, ``pip download nvidia-cuda-nvcc``) then reports what each kernel needs, as the driver's JIT
would: for main's D3Q19 FP32 ``adjoint_fresh`` it printed 120 registers, the number the H200's
driver reported in ``adjointgen bench``. A quick loop for changes to the emitted code (before
spending device time); timing still needs the GPU.

    python benchmarks/ptxas_registers.py generated/d3q19_bgk_fp32fp32.py --ptxas /path/to/ptxas [--arch 90]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def registers(module_path: str, ptxas: str, arch: int = 90, cap: int | None = None, nvdisasm: str | None = None) -> dict:
    """{kernel name: (registers, spill store bytes, spill load bytes)}; ``cap``: ptxas's
    ``-maxrregcount`` (what a kernel would need under a register limit); with ``nvdisasm`` (from
    the ``nvidia-cuda-nvdisasm`` wheel) also the kernel's static SASS: instructions, calls (a
    division's slow path is one) and local-memory (spill) instructions, appended to the tuple."""
    import warp as wp

    wp.config.quiet = True
    spec = importlib.util.spec_from_file_location(Path(module_path).stem, module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # the module's own kernels, and those defined with module="unique" (one Warp module each)
    warp_modules = {id(k.module): k.module for k in vars(module).values() if isinstance(k, wp.Kernel)}
    with tempfile.TemporaryDirectory() as folder:
        outputs = [path for m in warp_modules.values() for path in wp.compile_aot_module(m, arch=arch, module_dir=folder,
                                                                                          use_ptx=True)]
        found = {}
        for ptx in outputs:
            text = Path(ptx).read_bytes().replace(b"\0", b"")  # Warp's PTX ends in a NUL byte
            clean = Path(folder) / "clean.ptx"
            clean.write_bytes(text)
            limit = [f"-maxrregcount={cap}"] if cap else []
            cubin = Path(folder) / "out.cubin"
            report = subprocess.run([ptxas, f"-arch=sm_{arch}", "-v", *limit, str(clean), "-o", str(cubin)],
                                    capture_output=True, text=True, check=True).stderr
            sass = _sass_counts(nvdisasm, cubin) if nvdisasm else {}
            kernel = None
            for line in report.splitlines():
                match = re.search(r"entry function '(\w+?)_[0-9a-f]+_cuda_kernel_forward'", line)
                if match:
                    kernel = match.group(1)
                spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
                if spill and kernel:
                    found[kernel] = [None, int(spill.group(1)), int(spill.group(2))]
                used = re.search(r"Used (\d+) registers", line)
                if used and kernel:
                    found[kernel][0] = int(used.group(1))
            for name, counts in sass.items():
                if name in found:
                    found[name] += list(counts)
    return {name: tuple(values) for name, values in found.items()}


def _sass_counts(nvdisasm: str, cubin: Path) -> dict:
    """{kernel: (SASS instructions, CALL instructions, LDL + STL instructions)} of a cubin."""
    listing = subprocess.run([nvdisasm, str(cubin)], capture_output=True, text=True, check=True).stdout
    counts, kernel = {}, None
    for line in listing.splitlines():
        if line.startswith(".text."):  # a function's code, or its subroutines' (counted with it)
            kernel = None
        header = re.match(r"\.text\.(\w+?)_[0-9a-f]+_cuda_kernel_forward:", line)
        if header:
            kernel = header.group(1)
            counts[kernel] = [0, 0, 0]
            continue
        instruction = re.match(r"\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if instruction and kernel:
            opcode = instruction.group(1)
            counts[kernel][0] += 1
            counts[kernel][1] += opcode.startswith("CALL")
            counts[kernel][2] += opcode.startswith(("LDL", "STL"))
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="+", help="generated module files")
    parser.add_argument("--ptxas", default="ptxas")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--cap", type=int, default=None, help="a register limit (ptxas -maxrregcount)")
    parser.add_argument("--nvdisasm", default=None, help="also count the SASS instructions (nvdisasm from nvidia-cuda-nvdisasm)")
    args = parser.parse_args(argv)
    sass = " SASS instructions | CALLs | LDL/STL |" if args.nvdisasm else ""
    print("| module | kernel | registers | spill stores (B) | spill loads (B) |" + sass)
    print("|---|---|---|---|---|" + "---|---|---|" * bool(sass))
    for path in args.modules:
        for kernel, values in sorted(registers(path, args.ptxas, args.arch, args.cap, args.nvdisasm).items()):
            print(f"| {Path(path).name} | {kernel} | " + " | ".join(str(v) for v in values) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
