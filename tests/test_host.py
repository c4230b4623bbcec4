"""Every time and latency names its machine: the CPU model is read as lscpu shows it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from edgecifar.host import cpu_model


@pytest.mark.skipif(shutil.which("lscpu") is None, reason="lscpu not installed")
def test_the_cpu_model_is_the_one_lscpu_shows():
    out = subprocess.run(["lscpu"], capture_output=True, text=True, env={"LC_ALL": "C"}).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    assert cpu_model() in names


AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
VNNI_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_tile\n"


def test_cpu_features_are_read_from_the_flags_line_in_table_order():
    from edgecifar.host import features_in

    assert features_in(AVX2_ONLY) == ("avx2",)
    assert features_in(VNNI_BF16) == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    assert features_in("processor\t: 0\n") == ()


def test_bfloat16_is_native_only_with_avx512_bf16_or_amx():
    from edgecifar.host import features_in, native_bf16

    assert not native_bf16(features_in(AVX2_ONLY))
    assert native_bf16(features_in(VNNI_BF16))
    assert native_bf16(("amx_bf16",))
