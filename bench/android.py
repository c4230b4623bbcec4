"""TensorFlow Lite's ``benchmark_model`` output, as an Android phone prints it: its figures and a bench row.

Pure text in, figures out (no adb, no device): the ``android`` device (:mod:`edgecifar.bench.devices`) runs the
binary and hands its output here; tests feed it the output of real phones.
"""

from __future__ import annotations

import re

from edgecifar.bench.worker import device_result
from edgecifar.workers import error

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TIMINGS_RE = re.compile(rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
                         rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})")
_STATS_RE = re.compile(r"(?<![\w(])count=(\d+)((?:\s+\w+=" + _NUM + r")*)")
_PAIR_RE = re.compile(rf"(\w+)=({_NUM})")
_DELTA_RE = re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init=({_NUM}) overall=({_NUM})")
_PEAK_RE = re.compile(rf"Peak memory footprint \(MB\): init=({_NUM}) overall=({_NUM})")
_PERIODIC_RE = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_SIZE_RE = re.compile(rf"The input model file size \(MB\): ({_NUM})")
_ERROR_RE = re.compile(r"(?:^|\s)ERROR: (.+?)\s*$")


def parse_benchmark_model(text: str) -> dict:
    """Timing and memory figures from TensorFlow Lite ``benchmark_model`` output (any version's format).

    Times come back in milliseconds. Handles plain lines, ``INFO:``-prefixed lines and logcat lines;
    the older ``Peak memory footprint (MB): init= overall=`` (peak RSS), the newer ``Memory footprint
    delta from the start of the tool (MB)`` (growth since start) and the optional ``Overall peak
    memory footprint (MB) via periodic monitoring``. Without a timings line, ``error`` says why.
    """
    out: dict = {}
    lines = text.splitlines()
    timing_line = None
    for i, line in enumerate(lines):
        m = _TIMINGS_RE.search(line)
        if m:
            timing_line = i
            init, first, warm, avg = (float(v) for v in m.groups())
            out.update(init_ms=init / 1e3, first_ms=first / 1e3, warmup_avg_ms=warm / 1e3, avg_ms=avg / 1e3)
    # The regular runs' statistics: the last "count=" line before the timings (op-profiling tables
    # print more "Timings (microseconds): count=..." lines after it).
    end = timing_line if timing_line is not None else len(lines)
    for line in reversed(lines[:end]):
        if "Timings (microseconds)" in line:
            continue
        m = _STATS_RE.search(line)
        if m:
            out["runs"] = int(m.group(1))
            for key, value in _PAIR_RE.findall(m.group(2)):
                if key in ("min", "max", "std", "p5", "median", "p95"):  # first/avg come from the timings line
                    out[f"{key}_ms"] = float(value) / 1e3
            break
    for line in lines:
        if m := _DELTA_RE.search(line):
            out.update(mem_init_mb=float(m.group(1)), mem_overall_mb=float(m.group(2)), mem_kind="delta")
        elif m := _PEAK_RE.search(line):
            out.update(mem_init_mb=float(m.group(1)), mem_overall_mb=float(m.group(2)), mem_kind="peak")
        if m := _PERIODIC_RE.search(line):
            out["peak_mem_mb"] = float(m.group(1))
        if m := _SIZE_RE.search(line):
            out["model_mb"] = float(m.group(1))
    if "avg_ms" not in out:
        errors = [m.group(1) for line in lines if (m := _ERROR_RE.search(line))]
        failed = any("Benchmarking failed" in line for line in lines)
        reason = errors[0] if errors else ("Benchmarking failed" if failed else "no timing lines in its output")
        out["error"] = f"benchmark_model: {reason}"
    return out


def benchmark_model_row(parsed: dict) -> dict:
    """A bench row (worker-result shape) from :func:`parse_benchmark_model`'s figures."""
    if "error" in parsed:
        return error(parsed["error"])
    nan = float("nan")
    median = parsed.get("median_ms", parsed["avg_ms"])
    memory = parsed.get("peak_mem_mb")
    if memory is None and parsed.get("mem_kind") == "peak":
        memory = parsed.get("mem_overall_mb")
    note = "latency: benchmark_model on random inputs (median if printed, else mean); accuracy not measured"
    if memory is None and "mem_overall_mb" in parsed:
        note += f"; memory = growth since start ({parsed['mem_overall_mb']:.1f} MB), not peak RSS"
    row = device_result(
        "benchmark_model",  # p90/p99 stay NaN: benchmark_model prints p95 at most (kept below)
        latency={"runs": parsed.get("runs", 0), "blocks": 1, "median_ms": median, "mean_ms": parsed["avg_ms"],
                 "min_ms": parsed.get("min_ms", nan), "spread_lo_ms": parsed.get("min_ms", nan),
                 "spread_hi_ms": parsed.get("max_ms", nan)},
        load_ms=parsed.get("init_ms", nan), peak_rss_mb=memory if memory is not None else nan, note=note)
    row["benchmark_model"] = parsed
    return row
