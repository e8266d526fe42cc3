"""The number format the backbone computes in (`run.dtype`) and whether scoring is compiled (`run.compile`),
resolved for the machine a run is on.

bf16 pays only where the hardware multiplies bf16: Intel AMX or AVX-512 BF16 on a CPU, bf16 tensor cores on a
GPU. Elsewhere PyTorch emulates it: on an AVX2-only AMD EPYC (2 cores, torch 2.13) a 2048^2 bf16 matmul ran at
0.3 GFLOP/s against 88 in fp32, and SmolLM2 scoring at 0.26 samples/s against 1.40 (results/speed/). So `auto`
asks the hardware, never assumes it.

In bf16 only the frozen backbone weights and its activations are bf16 (loaded so, run under autocast). The
trained parts stay fp32: LoRA weights (peft keeps adapters in fp32), the CoLLM mapping and slot tables, their
AdamW state, the Yes/No score head (`LLMRecommender.forward`) and the loss.
"""

import contextlib
import os
from dataclasses import dataclass

import torch

from minigpt4.config import ConfigError

# Scoring fewer rows than this never compiles under `auto`: compiling the forward took 80 s (bf16, AMX, reported
# in issue 17) to 280 s (fp32, AVX2, measured here), more than a small split takes to score.
COMPILE_MIN_ROWS = 2000
# Compiled scoring pads each batch to a multiple of this many tokens, so prompt lengths fall into few shapes.
COMPILE_PAD_MULTIPLE = 16


# oneDNN, which multiplies bf16 on a CPU, can be held below the CPU's instruction set (ONEDNN_MAX_CPU_ISA, or its
# older name DNNL_MAX_CPU_ISA); at these levels it has no bf16 instructions and bf16 is emulated whatever the CPU
# has. Measured on a Xeon with AMX (1024^2 matmul, one thread): bf16 1,091 GFLOP/s; AVX2 1.0; AVX512_CORE 22;
# fp32 136. So `ONEDNN_MAX_CPU_ISA=AVX2` makes such a CPU multiply bf16 as an AVX2-only one does (docs/TESTING.md).
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_bf16_hardware():
    """(has fast bf16, what was found) for this CPU: `cpu_bf16_native()`, unless BINLLM_CPU_BF16=0 or 1 replaces
    it (the test suite sets 0, so its runs compute alike on every CPU)."""
    forced = os.environ.get("BINLLM_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1", f"BINLLM_CPU_BF16={forced} replaces the CPU check"
    return cpu_bf16_native()


def cpu_bf16_native():
    """(has fast bf16, what was found) from PyTorch's own CPU feature checks and oneDNN's instruction-set limit."""
    capability = torch.backends.cpu.get_cpu_capability()
    found = [name for name, check in (("AMX", "_is_amx_tile_supported"), ("AVX-512 BF16", "_is_avx512_bf16_supported"))
             if getattr(torch.cpu, check, lambda: False)()]
    limit = next((f"{key}={os.environ[key]}" for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
                  if os.environ.get(key, "").upper() in ONEDNN_ISAS_WITHOUT_BF16), None)
    if found and limit:
        return False, (f"the CPU has {' and '.join(found)} but {limit} keeps oneDNN below them (PyTorch capability "
                       f"{capability}), so bf16 is emulated")
    if found:
        return True, f"the CPU has {' and '.join(found)} (PyTorch capability {capability})"
    return False, f"the CPU has neither AMX nor AVX-512 BF16 (PyTorch capability {capability}), so bf16 is emulated"


def cpu_summary():
    """One line on the CPU and its bf16, printed by `make test` before the suite (its time depends on both)."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    native, why = cpu_bf16_native()
    return f"CPU: {model}, {os.cpu_count()} cores; bf16 {'native' if native else 'emulated'}: {why}"


def cuda_bf16_hardware(device):
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return True, f"{torch.cuda.get_device_name(device)} has bf16 tensor cores"
    return False, f"{torch.cuda.get_device_name(device)} has no native bf16"


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype
    device_type: str
    reason: str
    compile: str = "false"  # run.compile: auto, true or false

    @property
    def name(self):
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def autocast(self):
        """The context every forward runs in: bf16 autocast for a bf16 backbone (its fp32 LoRA, mapping and
        slot weights are then multiplied in bf16 too, while their weights and gradients stay fp32)."""
        if self.dtype == torch.bfloat16:
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def compile_scoring(self, rows):
        """(compile the scoring forward?, why) for a split of `rows` rows to score."""
        if self.compile == "false":
            return False, "run.compile: false"
        if self.compile == "true":
            return True, "run.compile: true"
        if rows < COMPILE_MIN_ROWS:
            return False, f"run.compile: auto, and {rows} rows are too few to pay back the compile time"
        if self.device_type != "cpu" or self.dtype != torch.bfloat16:
            # fp32 on a CPU is bound by matrix products, which compile leaves as they are: 1.42 vs 1.40 samples/s
            # after 280 s of compiling. On GPUs compile has not been measured here.
            return False, (f"run.compile: auto compiles bf16 scoring on a CPU only, not {self.name} on "
                           f"{self.device_type}")
        return True, f"run.compile: auto, bf16 on a CPU and {rows} rows to score"

    def describe(self):
        return f"precision {self.name} ({self.reason})"


def resolve_precision(run, device):
    """`run.dtype` (auto, fp32, bf16), with `run.amp` for upstream YAMLs, on `device` -> Precision."""
    setting, kind = run.dtype, device.type
    if kind == "cuda":
        fast, hardware = cuda_bf16_hardware(device)
    else:
        fast, hardware = cpu_bf16_hardware()
    if setting == "fp32":
        return Precision(torch.float32, kind, "run.dtype: fp32", run.compile)
    if setting == "bf16":
        if kind == "cuda" and not fast:
            raise ConfigError(f"run.dtype = bf16 but {hardware}: use run.dtype: fp32 (or auto)")
        note = "" if fast else "; expect it to be several times slower than fp32 here"
        return Precision(torch.bfloat16, kind, f"run.dtype: bf16; {hardware}{note}", run.compile)
    if not run.amp:
        return Precision(torch.float32, kind, "run.dtype: auto with run.amp: False (upstream key) keeps fp32",
                         run.compile)
    if fast:
        return Precision(torch.bfloat16, kind, f"run.dtype: auto; {hardware}", run.compile)
    return Precision(torch.float32, kind, f"run.dtype: auto; {hardware}", run.compile)
