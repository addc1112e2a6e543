"""The import structure: no import cycles between files, common/ on the standard library only, and the layer
contracts of .importlinter (docs/architecture.md, "Layers")."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "dassl", "clip", "toy", "datasets", "calibration", "trainers", "runs", "experiments", "tools")

def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every project module (train.py included)."""
    out = {"train": REPO / "train.py"}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, at any depth (a lazy import inside a function is a dependency too)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a package: its closest module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def test_cycle_finder_finds_a_known_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [{"a", "b", "c"}]


def test_no_import_cycles_between_files():
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert graph["datasets"] and "dassl.data.datasets.build" in graph["datasets"]  # the walk sees real edges
    cycles = _cycles(graph)
    assert not cycles, f"import cycles between files: {[sorted(c) for c in cycles]}"


def _tool_imports(path: Path, tool_stems: set[str]) -> set[str]:
    """What a tool file imports (at any depth) that is another tool or train.py: ``tools.x`` and ``tools`` itself,
    ``train``, and the bare name of a tools/ file (reachable when tools/ is on sys.path)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            base = node.module or ""
            names = [f"{base}.{a.name}" if base == "tools" else base for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative: tools is a package, so `from . import x` is tools.x
            names = [f"tools.{node.module or a.name}" for a in node.names]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in ("tools", "train"):
                found.add(name if top == "tools" else "train")
            elif top in tool_stems:
                found.add(f"tools.{top}")
    return found


def test_tool_import_finder_sees_every_spelling(tmp_path):
    f = tmp_path / "t.py"
    f.write_text("import tools.plot\nfrom tools import sweep, launch\ndef f():\n    import train\n"
                 "    from tools.benchmark import x\n    import calibrate\nfrom . import parse_results\n"
                 "from experiments import sweep\nimport experiments.plots\n")
    assert _tool_imports(f, {"calibrate"}) == {"tools.plot", "tools.sweep", "tools.launch", "train",
                                                "tools.benchmark", "tools.calibrate", "tools.parse_results"}


def test_tools_import_no_other_tool_and_not_train():
    """A tool is a thin entry point over the libraries: what two tools share lives in a library (experiments/,
    calibration/, ...), and train.py is run as a process (experiments/ may import it on a tool's behalf)."""
    files = sorted((REPO / "tools").glob("*.py"))
    stems = {p.stem for p in files} - {"__init__"}
    bad = []
    for path in files:
        me = f"tools.{path.stem}"
        bad += [f"tools/{path.name} imports {t}" for t in sorted(_tool_imports(path, stems - {path.stem}) - {me})]
    assert not bad, "move what they share into a library module:\n" + "\n".join(bad)


def test_common_uses_only_the_standard_library_at_import():
    """common/ is the bottom layer: what it imports at module level is the standard library or common itself."""
    for path in sorted((REPO / "common").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "common", f"{path.name} imports {name}"


def test_import_contracts_hold():
    """The .importlinter contracts (also run by .ci/run before the tests)."""
    pytest.importorskip("importlinter", reason="import-linter is in requirements-test.txt; pip install it")
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    res = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_the_dassl_api_surface_stays_importable():
    """What CoOp-family trainer files and train.py import from the engine (docs/engine_api.md#api-surface)."""
    import importlib

    surface = {
        "dassl.engine": "TRAINER_REGISTRY build_trainer TrainerBase SimpleTrainer TrainerX",
        "dassl.config": "get_cfg_default",
        "dassl.utils": "Registry setup_logger set_random_seed collect_env_info mkdir_if_missing check_isfile read_json "
                       "write_json listdir_nohidden read_image tolist_if_not check_availability AverageMeter "
                       "MetricMeter save_checkpoint load_checkpoint resume_from_checkpoint load_pretrained_weights "
                       "count_num_param",
        "dassl.optim": "build_optimizer build_lr_scheduler",
        "dassl.metrics": "compute_accuracy",
        "dassl.data": "DataManager DatasetWrapper build_data_loader",
        "dassl.data.transforms": "build_transform INTERPOLATION_MODES",
        "dassl.data.samplers": "build_sampler",
        "dassl.data.datasets": "DATASET_REGISTRY build_dataset Datum DatasetBase",
        "dassl.data.datasets.base_dataset": "Datum",
        "dassl.evaluation": "EVALUATOR_REGISTRY build_evaluator EvaluatorBase Classification",
    }
    missing = [f"{mod}.{name}" for mod, names in surface.items() for name in names.split()
               if not hasattr(importlib.import_module(mod), name)]
    assert not missing, missing
