"""The real-shape benchmark as one run (tools/benchmark.py --real-shape) and its section of docs/performance.md."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tabulate import tabulate

from . import realshape as R
from .report import replace_section as report_replace

SECTION = ("<!-- realshape-benchmark:begin -->", "<!-- realshape-benchmark:end -->")


def stages(quick: bool) -> list[tuple]:
    """What one run measures, most telling first (a time budget cuts the tail). ``quick``: tiny shapes, one round
    (tests, --quick). Entries: ("text", kwargs), ("grouping", classes), ("step", method, classes, batch, split),
    ("memory", method, classes, batch, truncate, checkpoint_chunk)."""
    if quick:
        return [("text", dict(classes=8, rounds=1, warmup=0)), ("step", "CoOp", 8, 4, True),
                ("step", "CoCoOp", 4, 2, False), ("memory", "CoOp", 8, 4, True, 0), ("memory", "CoOp", 16, 4, True, 0),
                ("memory", "CoOp", 8, 4, False, 0), ("memory", "CoOp", 16, 4, False, 0), ("grouping", 16)]
    m = "memory"
    return [("text", dict(classes=100, rounds=1, warmup=0)), ("step", "CoOp", 100, 32, True),
            ("step", "CoCoOp", 100, 1, False), (m, "CoOp", 100, 32, True, 0), (m, "CoOp", 100, 32, False, 0),
            (m, "CoOp", 1000, 32, True, 0), (m, "CoOp", 1000, 32, False, 0), (m, "CoOp", 300, 32, True, 0),
            (m, "CoOp", 50, 32, False, 0), ("step", "CoCoOp", 100, 4, False),
            (m, "CoCoOp", 100, 1, True, 0), (m, "CoCoOp", 100, 1, False, 0), (m, "CoCoOp", 100, 4, True, 0),
            (m, "CoCoOp", 100, 4, False, 0), (m, "KgCoOp", 100, 32, True, 0), (m, "KgCoOp", 100, 32, False, 0),
            (m, "ProGrad", 100, 32, True, 0), (m, "ProGrad", 100, 32, False, 0), (m, "ProDA", 25, 32, True, 0),
            (m, "ProDA", 25, 32, False, 0), (m, "ProDA", 50, 32, True, 0), (m, "ProDA", 50, 32, False, 0),
            ("step", "MaPLe", 100, 4, False), ("step", "PromptSRC", 100, 4, False), ("grouping", 1000),
            (m, "CoOp", 300, 32, True, 25), (m, "CoOp", 1000, 32, True, 25)]


def measure_lockstep(workdir: Path, epochs: int = 5) -> dict[str, Any]:
    """The toy {plain, --calib} CoOp pair (toy-clip, seed 1, 16 shots, one thread) trained in lockstep against the
    same two runs as separate processes (experiments.lockstep_bench), with whether their predictions agree."""
    from experiments.lockstep_bench import time_lockstep, toy_pair

    res = time_lockstep(toy_pair(str(workdir / "toy_data"), epochs), workdir / "lockstep")
    res["summary"] = (f"toy-clip CoOp, {epochs} epochs: two separate runs {res['separate']['wall_s']:.1f} s wall "
                      f"({res['separate']['cpu_s']:.1f} s CPU), the pair in lockstep {res['lockstep']['wall_s']:.1f} s "
                      f"({res['lockstep']['cpu_s']:.1f} s CPU): **{res['wall_ratio']:.2f}x** wall, "
                      f"{res['cpu_ratio']:.2f}x CPU (target <= 0.65x); predictions "
                      + ("identical" if res["identical_predictions"] else "DIFFERENT"))
    return dict(res, available=True)


def run(quick: bool = False, cap_gib: float = 8.0, log: Callable[[str], None] = print,
        workdir: Path | None = None, state: Path | None = None, budget_s: float | None = None) -> dict[str, Any]:
    """Every stage in order; with ``state`` each finished stage is saved there and skipped when run again (resume
    after an interruption); after ``budget_s`` seconds no new stage starts (the report lists what was left)."""
    bb = "tiny-vit" if quick else R.RANDOM_VIT_B16
    chunk = 4 if quick else 25
    done: dict[str, Any] = json.loads(state.read_text()) if state and state.is_file() else {}
    tmp = tempfile.TemporaryDirectory(prefix="realshape-") if workdir is None else None
    work = Path(tmp.name) if tmp else Path(workdir)
    start = time.perf_counter()
    skipped = []
    try:
        for stage in stages(quick):
            key = json.dumps(stage, sort_keys=True)
            if key in done:
                continue
            if budget_s is not None and time.perf_counter() - start > budget_s:
                skipped.append(stage)
                continue
            log(f"{stage}")
            kind = stage[0]
            if kind == "text":
                done[key] = R.measure_text_tower(**stage[1], backbone=bb)
            elif kind == "grouping":
                done[key] = R.measure_text_tower(classes=stage[1], rounds=2, warmup=0, grad=False,
                                                 kinds=("cut", "grouped"), backbone=bb)
            elif kind == "step":
                _, method, classes, batch, split = stage
                done[key] = R.measure_step(method, classes, batch, work, rounds=1, warmup=0, image_split=split,
                                           backbone=bb, checkpoint_chunk=chunk if split else 0)
            else:
                _, method, classes, batch, trunc, ck = stage
                done[key] = R.measure_memory(method, classes, batch, work, truncate=trunc, checkpoint_chunk=ck,
                                             cap_gib=cap_gib, backbone=bb)
            done[key]["elapsed_s"] = time.perf_counter() - start
            if state:
                state.write_text(json.dumps(done))
        by_kind = {k: [done[json.dumps(s, sort_keys=True)] for s in stages(quick)
                       if s[0] == k and json.dumps(s, sort_keys=True) in done]
                   for k in ("text", "grouping", "step", "memory")}
        out: dict[str, Any] = {"quick": quick, "cap_gib": cap_gib, "backbone": bb,
                               "text": (by_kind["text"] or [None])[0], "grouping": (by_kind["grouping"] or [None])[0],
                               "steps": by_kind["step"], "memory": by_kind["memory"],
                               "not_measured": [list(s) for s in skipped]}
        out["lockstep"] = measure_lockstep(work, epochs=1 if quick else 5)
        out["targets"] = targets(out)
        out["elapsed_s"] = stage_time(list(done.values()))
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()


def stage_time(results: list[dict[str, Any]]) -> float:
    """Seconds the stages took in all, summed over resumed runs (each stage records the time since its run began,
    in the order the stages finished: a drop marks a new run)."""
    total, prev = 0.0, 0.0
    for r in results:
        t = r.get("elapsed_s", 0.0)
        total += t - prev if t >= prev else t
        prev = t
    return total


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
    out = {"text_ratio": (r["text"] and r["text"]["text_ratio"], t["text_ratio"]),
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


VIT_B16_NOTE = (": ViT-B/16's shapes (vision 12 x 768, text 12 x 512, 224 px, 77 tokens) with random weights, "
                "nothing downloaded")


def render(r: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    text, grouping = r["text"], r["grouping"]
    lines = [SECTION[0], "## Real shapes: the text tower truncated at the EOT", "",
             f"Generated by `{command}`; on {machine['cpu']} ({machine['cores']} cores), torch "
             f"{machine.get('torch', '')} with 1 thread, {machine['date']}; load average before "
             f"{machine.get('load_before')}, after {machine.get('load_after')}.", "",
             f"Backbone `{r['backbone']}`" + (VIT_B16_NOTE if r["backbone"] == R.RANDOM_VIT_B16 else "")
             + ". Prompts use ImageNet's class names (open_clip's list), so their "
             "lengths are the real ones. Variants are timed in the same rounds; a ratio is the median of per-round "
             "ratios, so load from other processes slows both sides alike. Steps: one timed round each (the "
             f"stages took {r.get('elapsed_s', 0) / 60:.0f} min in all on this shared machine; `--budget-min` "
             "bounds a run, `--state` resumes one).", ""]
    if text:
        rows = [("CoOp text pass, forward + backward, all 77 positions", _ms(text["text_full_ms"]), ""),
                (f"the same, truncated at the last EOT ({text['positions']} positions)", _ms(text["text_cut_ms"]),
                 f"{_x(text['text_ratio'])} faster; {_target(r, 'text_ratio')}"),
                (f"the same, {text['groups']} length groups each cut at its own EOT", _ms(text["text_grouped_ms"]),
                 f"{_x(text['grouped_ratio'])} of the ungrouped truncated pass (ratio < 1: grouping is slower)")]
        if grouping:
            rows += [(f"{grouping['classes']:,} ImageNet prompts, forward only, truncated",
                      _ms(grouping["text_cut_ms"]), ""),
                     (f"the same, {grouping['groups']} length groups", _ms(grouping["text_grouped_ms"]),
                      f"{_x(grouping['grouped_ratio'])} of the ungrouped pass")]
        p1000 = text["positions_1000"]
        lines += [f"### Text tower (C = {text['classes']}, {text['n_ctx']} context vectors)", "",
                  tabulate(rows, headers=["figure", "value", "note"], tablefmt="github"), "",
                  f"- Largest difference of the normalised features, truncated vs 77 positions: "
                  f"{text['feature_max_diff']:.1e} (float rounding).",
                  f"- CoOp prompts over ImageNet's 1,000 names need {p1000['min']} to {p1000['max']} positions "
                  f"(median {p1000['median']}) of 77.", ""]
    srows = []
    for s in r["steps"]:
        srows.append((f"{s['method']} C={s['classes']} B={s['batch']}" + ("" if s.get("primed") else " *"),
                      _ms(s["full_ms"]), _ms(s["cut_ms"]),
                      _x(s["ratio"]), _ms(s.get("image_forward_ms")), _ms(s.get("reference_ms"))))
    lines += ["### Training steps (real `compute_loss` + `backward_and_update`)", "",
              tabulate(srows, headers=["step", "77 positions", "truncated", "speedup", "image forward alone",
                                       "reference-shaped step"], tablefmt="github"), ""]
    if any(not s.get("primed") for s in r["steps"]):
        lines += ["- \\* measured without an untimed first call: the 77-position column (timed first) also holds "
                  "the first call's one-off costs (allocator warm-up); later steps run one untimed truncated "
                  "call first.", ""]
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
                  f"{coop.get('checkpoint_chunk')}) took {_x(coop.get('checkpoint_cost'))} the truncated step in "
                  "this single timed round (the text side is recomputed once in backward; one round is within "
                  "this machine's noise: the memory runs below compare it at equal class counts).", ""]
    lines += _memory_lines(r)
    lines += _decisions(r)
    if r.get("not_measured"):
        lines += ["- Not measured in this run (its time budget ran out): "
                  + "; ".join(" ".join(str(x) for x in s) for s in r["not_measured"]) + ".", ""]
    lock = r.get("lockstep") or {}
    lines += ["### Lockstep pair", "",
              (f"- {{plain, --calib}} in lockstep: {lock.get('summary', '')}" if lock.get("available") else
               f"- Not measured: {lock.get('note', 'no lockstep code')}."), ""]
    lines += [SECTION[1]]
    return "\n".join(lines) + "\n"


#: why a target can be missed, by key (printed beside the miss)
WHY = {
    "text_ratio": "the truncated pass still runs every layer's fixed work (LayerNorms, projections of the EOT row, "
                  "the backward of the context), and attention's share shrinks less than linearly",
    "coop_step_ratio": "the frozen image forward of the batch is untouched by truncation and is a large part of "
                       "the step (Amdahl: the step cannot speed up more than step / image forward)",
    "cocoop_step_ratio": "CoCoOp's step also runs the image tower and its meta-network per image; only the text "
                         "side shrinks",
    "memory_share_1000": "the fixed share (the frozen model, the framework) and the per-class tensors outside the "
                         "tower's blocks do not shrink: the prompts are assembled at all 77 positions before the "
                         "tower cuts them",
    "coop_1000_ratio": "neither path fits under the memory cap at 1,000 classes and batch 32 on this machine "
                       "without MODEL.TEXT_CHECKPOINT_CHUNK, so no same-run ratio exists; the largest class count "
                       "each path fits is the finding",
}


def _decisions(r) -> list[str]:
    out = []
    for key, t in r["targets"].items():
        if t["met"] is False:
            v, b = t["value"], t["bound"]
            short = f"{v / b:.0%} of the target" if not key.startswith("memory") else f"{v:.2f} vs {b:g}"
            out.append(f"- Target `{key}` missed ({short}): {WHY[key]}.")
        elif t["met"] is None and key in WHY and key == "coop_1000_ratio":
            out.append(f"- Target `{key}` not measurable: {WHY[key]}.")
    g = [x for x in (r.get("text"), r.get("grouping")) if x and x.get("grouped_ratio")]
    if g:
        ratios = ", ".join(f"{x['grouped_ratio']:.2f}x at {x['classes']:,} prompts "
                           f"({'forward + backward' if x.get('grad') else 'forward only'})" for x in g)
        small = [x for x in g if x["classes"] <= 256]
        pays_small = any(x["grouped_ratio"] > 1.05 for x in small)
        out.append(f"- Grouping prompts of similar length (sorted by EOT, {g[0]['groups']} groups, each cut at its "
                   f"own EOT) against one truncated batch: {ratios} (above 1: grouping faster). "
                   + ("It pays at training sizes: worth turning on." if pays_small else
                      "It pays only for large batches, where one long class name sets the length of all; the "
                      "text tower is called with at most 256 prompts at zero-shot and evaluation (TEST.TEXT_CHUNK), "
                      "each call already cut at its own last EOT, and a training batch of ~100 prompts is slower "
                      "grouped (the smaller matrix products cost more than the few positions saved). Grouping "
                      "stays off (`clip.encoders.GROUP_SIZE = 0`; exact when set, tests/test_truncation.py)."))
    return out + ([""] if out else [])


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
            fits.append(f"{row['method']} B={row['batch']} {row['path']}: about {row['largest_fitting']:,} "
                        f"({row['largest_at_cap_rss']:,} at {cap:g} GiB of RSS)")
    ceiling = R.rss_ceiling(r["memory"])
    ck = next((m for m in r["memory"] if (m["method"], m["classes"], m["batch"], m["truncate"]) == (
        "CoOp", 1000, 32, True) and m["checkpoint_chunk"] and m.get("fits")), None)
    full_fit = R.linear_fit([m for m in r["memory"] if (m["method"], m["batch"], m["truncate"]) == (
        "CoOp", 32, False)])
    ck_line = []
    plain300 = _mem(r["memory"], "CoOp", 300, 32, True, 0)
    ck300 = _mem(r["memory"], "CoOp", 300, 32, True, 25)
    if plain300 and ck300 and plain300.get("fits") and ck300.get("fits"):
        ck_line.append(f"- Checkpointing at 300 classes (separate processes): step {ck300['step_s']:.1f} s vs "
                       f"{plain300['step_s']:.1f} s ({ck300['step_s'] / plain300['step_s']:.2f}x the time), peak "
                       f"{ck300['peak_mib']:,.0f} vs {plain300['peak_mib']:,.0f} MiB.")
    if ck:
        share = f" ({ck['peak_mib'] / (full_fit[0] + 1000 * full_fit[1]):.2f}x the 77-position path's " \
                "extrapolated peak)" if full_fit else ""
        ck_line += [f"- With MODEL.TEXT_CHECKPOINT_CHUNK {ck['checkpoint_chunk']}, CoOp trains 1,000 classes at batch "
                   f"32 in {ck['peak_mib']:,.0f} MiB{share}; its step took {ck['step_s']:.1f} s."]
    return ["### Peak training memory", "",
            f"Each configuration in a fresh subprocess capped at {cap:g} GiB of address space; one training step "
            "with the image tower replaced by a precomputed feature batch (frozen, under no_grad: a constant, not a "
            "per-class cost); the figure is the process's peak RSS (CUDA: max_memory_allocated).", "",
            tabulate(rows, headers=["method", "classes", "batch", "text tower", "peak", "step"],
                     tablefmt="github"), "",
            f"- 1,000 classes: truncated / 77 positions = {_x(r['targets']['memory_share_1000']['value'])}"
            + (" (extrapolated: neither fits under the cap)" if r.get("memory_share_extrapolated") else "")
            + f"; {_target(r, 'memory_share_1000')}.",
            *ck_line,
            "- Largest class count that fits (peak RSS linear in the class count through the measured points that "
            "fit): " + ("; ".join(fits) if fits else "n/a") + ".",
            (f"- The cap limits address space, which here runs well above RSS (libraries, reserved memory): runs "
             f"that did not fit failed at {ceiling:,.0f} MiB of RSS or more, the ceiling used for the first count."
             if ceiling else "- Every configuration fitted under the cap."), ""]


def replace_section(text: str, section: str, begin: str = SECTION[0], end: str = SECTION[1]) -> str:
    """``text`` with the real-shape section replaced (report.replace_section)."""
    return report_replace(text, section, begin, end)
