"""The real-shape benchmark as one run (tools/benchmark.py --real-shape) and its section of docs/performance.md."""
from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any, Callable

from tabulate import tabulate

from . import realshape as R

SECTION = ("<!-- realshape-benchmark:begin -->", "<!-- realshape-benchmark:end -->")
#: Engineer E's lockstep entry point (module, function): measured when it exists
LOCKSTEP_ENTRY = ("runs.lockstep", "benchmark_pair")


def plan(quick: bool) -> dict[str, Any]:
    """What one run measures. ``quick``: tiny class counts and one round (tests, --device cpu --quick)."""
    if quick:
        return {"text": dict(classes=8, rounds=1, warmup=0), "grouping": dict(classes=16),
                "steps": [("CoOp", 8, 4, True), ("CoCoOp", 4, 2, False)], "coop_large": None,
                "memory": [("CoOp", 8, 4, True, 0), ("CoOp", 16, 4, True, 0), ("CoOp", 8, 4, False, 0),
                           ("CoOp", 16, 4, False, 0)], "rounds": 1, "checkpoint_chunk": 4}
    return {"text": dict(classes=100, rounds=2, warmup=0), "grouping": dict(classes=1000),
            "steps": [("CoOp", 100, 32, True), ("CoCoOp", 100, 4, False), ("CoCoOp", 100, 1, False),
                      ("MaPLe", 100, 4, False), ("PromptSRC", 100, 4, False)],
            "coop_large": None, "checkpoint_chunk": 25,
            "memory": [("CoOp", 100, 32, True, 0), ("CoOp", 300, 32, True, 0), ("CoOp", 1000, 32, True, 0),
                       ("CoOp", 50, 32, False, 0), ("CoOp", 100, 32, False, 0), ("CoOp", 1000, 32, False, 0),
                       ("CoOp", 300, 32, True, 25),
                       ("KgCoOp", 100, 32, True, 0), ("KgCoOp", 100, 32, False, 0),
                       ("ProGrad", 100, 32, True, 0), ("ProGrad", 100, 32, False, 0),
                       ("ProDA", 25, 32, True, 0), ("ProDA", 50, 32, True, 0), ("ProDA", 25, 32, False, 0),
                       ("ProDA", 50, 32, False, 0),
                       ("CoCoOp", 100, 1, True, 0), ("CoCoOp", 100, 1, False, 0), ("CoCoOp", 100, 4, True, 0),
                       ("CoCoOp", 100, 4, False, 0)], "rounds": 1}


def measure_lockstep(workdir: Path) -> dict[str, Any]:
    """The {plain, --calib} pair in lockstep against two separate runs, by the lockstep entry point's own
    benchmark function (``LOCKSTEP_ENTRY``); reported as unavailable when that code is not in this checkout."""
    module, name = LOCKSTEP_ENTRY
    try:
        fn: Callable[..., dict] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return {"available": False, "note": f"{module}.{name} is not in this checkout (lockstep training)"}
    return dict(fn(workdir=workdir), available=True)


def run(quick: bool = False, cap_gib: float = 8.0, log: Callable[[str], None] = print,
        workdir: Path | None = None) -> dict[str, Any]:
    p = plan(quick)
    bb = "tiny-vit" if quick else R.RANDOM_VIT_B16
    tmp = tempfile.TemporaryDirectory(prefix="realshape-") if workdir is None else None
    work = Path(tmp.name) if tmp else Path(workdir)
    try:
        out: dict[str, Any] = {"quick": quick, "cap_gib": cap_gib, "backbone": bb}
        log("text tower: all 77 positions, truncated, truncated per length group")
        out["text"] = R.measure_text_tower(**p["text"], backbone=bb)
        log("length grouping at ImageNet's 1,000 class names (forward, as zero-shot and evaluation)")
        out["grouping"] = R.measure_text_tower(classes=p["grouping"]["classes"], rounds=1, warmup=0, grad=False,
                                               kinds=("cut", "grouped"), backbone=bb)
        out["steps"] = []
        for method, classes, batch, split in p["steps"]:
            log(f"step: {method} C={classes} B={batch}")
            out["steps"].append(R.measure_step(method, classes, batch, work, rounds=p["rounds"], warmup=0,
                                               image_split=split, backbone=bb,
                                               checkpoint_chunk=p["checkpoint_chunk"] if split else 0))
        out["memory"] = []
        for method, classes, batch, trunc, chunk in p["memory"]:
            log(f"memory: {method} C={classes} B={batch} truncate={trunc} checkpoint_chunk={chunk}")
            out["memory"].append(R.measure_memory(method, classes, batch, work, truncate=trunc,
                                                  checkpoint_chunk=chunk, cap_gib=cap_gib, backbone=bb))
        if p["coop_large"]:
            method, classes, batch, chunk = p["coop_large"]
            log(f"step: {method} C={classes} B={batch} truncated, plain and checkpointed")
            out["coop_large"] = R.measure_step(method, classes, batch, work, rounds=1, warmup=0,
                                               checkpoint_chunk=chunk, variants=("cut",), backbone=bb)
        out["lockstep"] = measure_lockstep(work)
        out["targets"] = targets(out)
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()


def _mem(results, method, classes, batch, trunc, chunk=0):
    for r in results:
        if (r["method"], r["classes"], r["batch"], r["truncate"], r["checkpoint_chunk"]) == (
                method, classes, batch, trunc, chunk):
            return r
    return None


def targets(r: dict[str, Any]) -> dict[str, Any]:
    """Each real-shape target with its value and whether it is met (None: not measurable in this run)."""
    t = R.TARGETS
    steps = {(s["method"], s["batch"]): s for s in r["steps"]}
    coop, cocoop = steps.get(("CoOp", 32)), steps.get(("CoCoOp", 4))
    out = {"text_ratio": (r["text"]["text_ratio"], t["text_ratio"]),
           "coop_step_ratio": (coop and coop["ratio"], t["coop_step_ratio"]),
           "cocoop_step_ratio": (cocoop and cocoop["ratio"], t["cocoop_step_ratio"])}
    full, cut = _mem(r["memory"], "CoOp", 1000, 32, False), _mem(r["memory"], "CoOp", 1000, 32, True)
    share = None
    if full and cut and full.get("fits") and cut.get("fits"):
        share = cut["peak_mib"] / full["peak_mib"]
    else:  # neither fits under the cap: the ratio of the linear fits at 1,000 classes (extrapolated)
        fits = [R.linear_fit([m for m in r["memory"] if (m["method"], m["batch"], m["truncate"],
                                                          m["checkpoint_chunk"]) == ("CoOp", 32, tr, 0)])
                for tr in (True, False)]
        if all(fits):
            share = (fits[0][0] + 1000 * fits[0][1]) / (fits[1][0] + 1000 * fits[1][1])
            r["memory_share_extrapolated"] = True
    out["memory_share_1000"] = (share, t["memory_share_1000"])
    out["coop_1000_ratio"] = (None, t["coop_1000_ratio"])  # the 77-position step at 1,000 classes: see memory
    return {k: {"value": v, "bound": b, "met": None if v is None else (v <= b if k.startswith("memory") else v >= b)}
            for k, (v, b) in out.items()}


# ----------------------------------------------------------------------------------------------- report
def _ms(v) -> str:
    return "-" if v is None else f"{v / 1e3:.2f} s"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _mib(r) -> str:
    if r is None:
        return "not run"
    if r.get("fits") is False:
        return f"does not fit in {r['cap_gib']:g} GiB"
    if r.get("fits") is None:
        return f"failed: {r.get('error', '')[:60]}"
    return f"{r['peak_mib']:,.0f} MiB"


def render(r: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    text, grouping = r["text"], r["grouping"]
    lines = [SECTION[0], "## Real shapes: the text tower truncated at the EOT", "",
             f"Generated by `{command}`; on {machine['cpu']} ({machine['cores']} cores), torch "
             f"{machine.get('torch', '')} with 1 thread, {machine['date']}; load average before "
             f"{machine.get('load_before')}, after {machine.get('load_after')}.", "",
             "Backbone `random-vit-b16`: ViT-B/16's shapes (vision 12 x 768, text 12 x 512, 224 px, 77 tokens) with "
             "random weights, nothing downloaded. Prompts use ImageNet's class names (open_clip's list), so their "
             "lengths are the real ones. Variants are timed in the same rounds; a ratio is the median of per-round "
             "ratios, so load from other processes slows both sides alike.", ""]
    rows = [("CoOp text pass, forward + backward, all 77 positions", _ms(text["text_full_ms"]), ""),
            (f"the same, truncated at the last EOT ({text['positions']} positions)", _ms(text["text_cut_ms"]),
             f"{_x(text['text_ratio'])} faster; {_target(r, 'text_ratio')}"),
            (f"the same, {text['groups']} length groups each cut at its own EOT", _ms(text["text_grouped_ms"]),
             f"{_x(text['grouped_ratio'])} of the ungrouped truncated pass"),
            (f"{grouping['classes']:,} ImageNet prompts, forward only, truncated", _ms(grouping["text_cut_ms"]),
             f"positions min/median/max {grouping['positions_1000']['min']}/"
             f"{grouping['positions_1000']['median']}/{grouping['positions_1000']['max']}"),
            (f"the same, {grouping['groups']} length groups", _ms(grouping["text_grouped_ms"]),
             f"{_x(grouping['grouped_ratio'])} of the ungrouped pass")]
    lines += [f"### Text tower (C = {text['classes']}, {text['n_ctx']} context vectors)", "",
              tabulate(rows, headers=["figure", "value", "note"], tablefmt="github"), "",
              f"- Largest difference of the normalised features, truncated vs 77 positions: "
              f"{text['feature_max_diff']:.1e} (float rounding).", ""]
    srows = []
    for s in r["steps"]:
        srows.append((f"{s['method']} C={s['classes']} B={s['batch']}", _ms(s["full_ms"]), _ms(s["cut_ms"]),
                      _x(s["ratio"]), _ms(s.get("image_forward_ms")), _ms(s.get("reference_ms"))))
    lines += ["### Training steps (real `compute_loss` + `backward_and_update`)", "",
              tabulate(srows, headers=["step", "77 positions", "truncated", "speedup", "image forward alone",
                                       "reference-shaped step"], tablefmt="github"), ""]
    coop = next((s for s in r["steps"] if s["method"] == "CoOp" and s.get("image_forward_ms")), None)
    if coop:
        text_full = coop["full_ms"] - coop["image_forward_ms"]
        text_cut = coop["cut_ms"] - coop["image_forward_ms"]
        lines += [f"- CoOp's step splits into the frozen image forward of {coop['batch']} images "
                  f"({_ms(coop['image_forward_ms'])}, untouched by truncation) and the text side "
                  f"({_ms(text_full)} at 77 positions, {_ms(text_cut)} truncated); {_target(r, 'coop_step_ratio')}. "
                  f"The reference-shaped step (77 positions plus the frozen image pass the paper's code adds to "
                  f"every step) is {_x(coop.get('reference_ratio'))} the truncated step.",
                  f"- Activation checkpointing of the text tower (MODEL.TEXT_CHECKPOINT_CHUNK "
                  f"{coop.get('checkpoint_chunk')}) costs {_x(coop.get('checkpoint_cost'))} the truncated step "
                  f"here (the text side is recomputed once in backward).", ""]
    lines += _memory_lines(r)
    large = r.get("coop_large")
    if large:
        lines += [f"- CoOp at C = {large['classes']:,}, B = {large['batch']}: truncated step "
                  f"{_ms(large['cut_ms'])}; with MODEL.TEXT_CHECKPOINT_CHUNK {large['checkpoint_chunk']} "
                  f"{_ms(large['checkpointed_ms'])} ({_x(large['checkpoint_cost'])} the time). The 77-position step "
                  f"at this class count: see the memory table ({_target(r, 'coop_1000_ratio')}).", ""]
    lock = r.get("lockstep") or {}
    lines += ["### Lockstep pair", "",
              (f"- {{plain, --calib}} in lockstep: {lock.get('summary', '')}" if lock.get("available") else
               f"- Not measured: {lock.get('note', 'no lockstep code')}."), ""]
    lines += [SECTION[1]]
    return "\n".join(lines) + "\n"


def _target(r, key) -> str:
    t = r["targets"][key]
    unit = "" if key.startswith("memory") else "x"
    op = "<=" if key.startswith("memory") else ">="
    state = {True: "met", False: "MISSED", None: "not measurable here"}[t["met"]]
    return f"{state} (target {op} {t['bound']:g}{unit})"


def _memory_lines(r) -> list[str]:
    cap = r["cap_gib"]
    rows = []
    for m in r["memory"]:
        path = ("77 positions" if not m["truncate"] else
                f"truncated, checkpoint chunk {m['checkpoint_chunk']}" if m["checkpoint_chunk"] else "truncated")
        rows.append((m["method"], f"{m['classes']:,}", m["batch"], path, _mib(m),
                     "-" if not m.get("step_s") else f"{m['step_s']:.1f} s"))
    fits = []
    for row in R.memory_table_rows(r["memory"], cap):
        if row["largest_fitting"] is not None:
            fits.append(f"{row['method']} B={row['batch']} {row['path']}: about {row['largest_fitting']:,} classes")
    return ["### Peak training memory", "",
            f"Each configuration in a fresh subprocess capped at {cap:g} GiB of address space; one training step "
            "with the image tower replaced by a precomputed feature batch (frozen, under no_grad: a constant, not a "
            "per-class cost); the figure is the process's peak RSS (CUDA: max_memory_allocated).", "",
            tabulate(rows, headers=["method", "classes", "batch", "text tower", "peak", "step"],
                     tablefmt="github"), "",
            f"- 1,000 classes: truncated / 77 positions = {_x(r['targets']['memory_share_1000']['value'])}"
            + (" (extrapolated: neither fits under the cap)" if r.get("memory_share_extrapolated") else "")
            + f"; {_target(r, 'memory_share_1000')}.",
            "- Largest class count under the cap (linear in the class count, from the measured points): "
            + ("; ".join(fits) if fits else "n/a") + ".", ""]


def replace_section(text: str, section: str, begin: str = SECTION[0], end: str = SECTION[1]) -> str:
    """``text`` with the delimited section replaced (inserted before "## How it is measured" when absent)."""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        return head + section + ("\n" + tail if tail else "")
    anchor = "## How it is measured"
    if anchor in text:
        head, tail = text.split(anchor, 1)
        return head + section + "\n" + anchor + tail
    return (text.rstrip() + "\n\n" if text.strip() else "") + section
