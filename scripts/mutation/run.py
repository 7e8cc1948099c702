#!/usr/bin/env python3
"""Mutation testing of the agent's security-critical modules (make mutation).

    run.py [--module auth.py ...] [--fail-under 90] [--work-dir DIR]

For each target in targets.toml, cosmic-ray mutates one module of a copy of
agent/src/cube_agent (the working tree is never touched: the copy comes first on
PYTHONPATH, for the agents the tests start too) and runs the target's test stages against
every mutant. It prints each module's score (killed / mutants that are not equivalent), the
survivors with their diff, and the total; it exits 1 when the total is under --fail-under.

`run.py --stages TARGET` is the test command cosmic-ray runs for each mutant.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGE = REPO / "agent/src/cube_agent"
TARGETS = HERE / "targets.toml"


@dataclass
class Result:
    module: str
    total: int
    killed: int
    equivalent: list[tuple[str, str]]  # (description, reason)
    survivors: list[str]  # description and diff
    seconds: float
    annotations: int = 0  # mutants inside annotations, never run
    outside: int = 0  # mutants outside the target's `only` functions, never run

    @property
    def score(self) -> float:
        counted = self.total - len(self.equivalent)
        return 100.0 * self.killed / counted if counted else 100.0


def load_targets() -> tuple[dict[str, dict], list[dict]]:
    data = tomllib.loads(TARGETS.read_text())
    targets = {t["module"]: t for t in data["target"]}
    return targets, data.get("equivalent", [])


def pytest_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]


def run_stages(module: str) -> int:
    """The test command for one mutant: each stage in turn; the first failure kills it."""
    targets, _ = load_targets()
    target = targets[module]
    # The in-process tests need no fixture of tests/ and no plugin but the timeout: without
    # the rest (schemathesis' plugin, the suites' conftest imports) pytest starts ~5x faster.
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO / "tests")]))
    light = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONPATH=path)
    runs = [(["--noconftest", "-p", "pytest_timeout", *target["fast"]], light)]
    runs += [(stage, None) for stage in target.get("stages", [])]
    for args, env in runs:
        done = subprocess.run(pytest_command(args), cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        if done.returncode != 0:
            return 1
    return 0


def cosmic_ray(*args: str | Path, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "cosmic_ray.cli", *map(str, args)], cwd=REPO, env=env, check=True
    )


def source_line(path: Path, line: int) -> str:
    return path.read_text().splitlines()[line - 1].strip()


def mutate(
    module: str, only: list[str] | None, work: Path, env: dict[str, str], equivalents: list[dict]
) -> Result:

    started = time.monotonic()
    copy = work / "src/cube_agent" / module
    baseline = time.monotonic()
    if run_stages_in(module, env) != 0:
        sys.exit(f"mutation: {module}: its tests fail without any mutation")
    timeout = max(60.0, 4 * (time.monotonic() - baseline))
    config = work / f"{module}.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{copy}"\n'
        f"timeout = {timeout:.0f}\n"
        "excluded-modules = []\n"
        f'test-command = "{sys.executable} {Path(__file__).resolve()} --stages {module}"\n'
        '[cosmic-ray.distributor]\nname = "local"\n'
    )
    db = work / f"{module}.sqlite"
    db.unlink(missing_ok=True)
    cosmic_ray("init", config, db, env=env)
    skip_unscored(db, copy, only)
    cosmic_ray("exec", config, db, env=env)
    (work / f"{module}.seconds").write_text(f"{time.monotonic() - started:.0f}\n")
    return collect(module, work, equivalents)


def collect(module: str, work: Path, equivalents: list[dict]) -> Result:
    """The result of a module's finished session in `work`."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    seconds = work / f"{module}.seconds"
    result = Result(module, 0, 0, [], [], float(seconds.read_text()) if seconds.exists() else 0)
    source = work / "src/cube_agent" / module  # as it was mutated (restored after each)
    with use_db(str(work / f"{module}.sqlite"), WorkDB.Mode.open) as wdb:
        for item, outcome in wdb.completed_work_items:
            mutation = item.mutations[0]
            line = mutation.start_pos[0]
            text = source_line(source, line)
            where = f"{module}:{line} {mutation.operator_name} #{mutation.occurrence}: {text}"
            if outcome.worker_outcome == WorkerOutcome.SKIPPED:
                result.annotations += outcome.output == "annotation"
                result.outside += outcome.output != "annotation"
                continue
            result.total += 1
            if outcome.test_outcome != TestOutcome.SURVIVED:
                result.killed += 1
                continue
            reason = equivalent_reason(equivalents, module, text, outcome.diff or "")
            if reason is not None:
                result.equivalent.append((where, reason))
            else:
                result.survivors.append(f"{where}\n{outcome.diff or ''}")
    return result


def annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) of every annotation in the module, as (line, column)."""
    spans = []
    for node in ast.walk(ast.parse(path.read_text())):
        found = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append(node.returns)
        if isinstance(node, (ast.arg, ast.AnnAssign)):
            found.append(node.annotation)
        for a in filter(None, found):
            spans.append(((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)))
    return spans


def definition_spans(path: Path, names: list[str]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) of each named function or class ("Proxy._read_body", "parse_json")."""
    spans, found = [], set()

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if name in names:
                    found.add(name)
                    first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                    spans.append(((first, 0), (child.end_lineno, child.end_col_offset)))
                walk(child, name + ".")

    walk(ast.parse(path.read_text()), "")
    missing = sorted(set(names) - found)
    if missing:
        sys.exit(f"mutation: {path.name}: no {', '.join(missing)} (targets.toml `only`)")
    return spans


def skip_unscored(db: Path, module: Path, only: list[str] | None) -> tuple[int, int]:
    """Mark as skipped the mutants inside annotations, and those outside the target's
    `only` definitions. Every agent module has `from __future__ import annotations`: an
    annotation is a string never evaluated, so such a mutant is equivalent by construction
    (`str | None` -> `str ^ None`). Their counts."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    assert "from __future__ import annotations" in module.read_text(), module
    spans = annotation_spans(module)
    scope = definition_spans(module, only) if only else None
    skipped = outside = 0
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        for item in list(wdb.pending_work_items):
            m = item.mutations[0]
            start, end = tuple(m.start_pos), tuple(m.end_pos)
            if any(a <= start and end <= b for a, b in spans):
                why = "annotation"
                skipped += 1
            elif scope is not None and not any(a <= start and end <= b for a, b in scope):
                why = "outside the target"
                outside += 1
            else:
                continue
            wdb.set_result(
                item.job_id, WorkResult(output=why, worker_outcome=WorkerOutcome.SKIPPED)
            )
    return skipped, outside


def mutant_line(diff: str) -> str:
    """The mutated line of a one-line diff, stripped."""
    added = [x[1:] for x in diff.splitlines() if x.startswith("+") and not x.startswith("+++")]
    return added[0].strip() if added else ""


def equivalent_reason(equivalents: list[dict], module: str, text: str, diff: str) -> str | None:
    for entry in equivalents:
        if (entry["module"], entry["line"], entry["mutant"]) == (module, text, mutant_line(diff)):
            return entry["why"]
    return None


def mutant_env(src: Path) -> dict[str, str]:
    """The environment the tests run in: the copy first on PYTHONPATH (for the agents the
    tests start too), so the mutant is what they import."""
    path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)


def retry(work: Path, modules: list[str]) -> None:
    """Forget the survivors' results and let cosmic-ray run them again."""
    src = work / "src"
    env = mutant_env(src)
    for module in modules:
        db = work / f"{module}.sqlite"
        with sqlite3.connect(db) as connection:
            connection.execute("DELETE FROM work_results WHERE upper(test_outcome) = 'SURVIVED'")
        print(f"mutation: {module}: the survivors again ...", flush=True)
        cosmic_ray("exec", work / f"{module}.toml", db, env=env)


def run_stages_in(module: str, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--stages", module], cwd=REPO, env=env
    )
    return done.returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--stages", metavar="MODULE", help=argparse.SUPPRESS)
    p.add_argument("--module", action="append", help="only this module (repeatable)")
    p.add_argument("--fail-under", type=float, default=90.0, help="minimum total score, %%")
    p.add_argument("--work-dir", type=Path, help="keep the copy and sessions here")
    p.add_argument(
        "--report", action="store_true", help="only report the sessions kept in --work-dir"
    )
    p.add_argument(
        "--retry",
        action="store_true",
        help="run the survivors of the sessions kept in --work-dir again (after a test fix)",
    )
    args = p.parse_args()
    if args.stages:
        return run_stages(args.stages)
    if args.report or args.retry:
        if args.work_dir is None:
            p.error("--report and --retry need --work-dir")
        _, equivalents = load_targets()
        done = sorted(path.stem for path in args.work_dir.glob("*.py.sqlite"))
        modules = [m for m in (args.module or done) if m in done]
        if args.retry:
            retry(args.work_dir, modules)
        return report([collect(m, args.work_dir, equivalents) for m in modules], args.fail_under)

    targets, equivalents = load_targets()
    modules = args.module or list(targets)
    unknown = sorted(set(modules) - set(targets))
    if unknown:
        p.error(f"no target for {', '.join(unknown)} in {TARGETS}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cube-mutation-"))
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(PACKAGE, src / "cube_agent", ignore=shutil.ignore_patterns("__pycache__"))
    env = mutant_env(src)

    results = []
    try:
        for module in modules:
            print(f"mutation: {module} ...", flush=True)
            results.append(mutate(module, targets[module].get("only"), work, env, equivalents))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return report(results, args.fail_under)


def report(results: list[Result], fail_under: float) -> int:
    for r in results:
        for text in r.survivors:
            print(f"SURVIVED {text}")
        for where, why in r.equivalent:
            print(f"equivalent {where}\n    {why}")
    total = Result(
        "total",
        sum(r.total for r in results),
        sum(r.killed for r in results),
        [e for r in results for e in r.equivalent],
        [s for r in results for s in r.survivors],
        sum(r.seconds for r in results),
        sum(r.annotations for r in results),
        sum(r.outside for r in results),
    )
    columns = ("module", "mutants", "killed", "equiv.", "survived", "score", "time")
    print("\n{:<14}{:>8}{:>8}{:>8}{:>9}{:>8}{:>8}{:>8}{:>9}".format(*columns, "annot.", "outside"))
    for r in [*results, total]:
        print(
            f"{r.module:<14}{r.total:>8}{r.killed:>8}{len(r.equivalent):>8}"
            f"{len(r.survivors):>9}{r.score:>7.1f}%{r.seconds:>7.0f}s{r.annotations:>8}"
            f"{r.outside:>9}"
        )
    print(
        "score = killed / (mutants - equivalent). Not run, not counted: annot. = mutants "
        "inside annotations (never evaluated), outside = outside a target's `only` list"
    )
    if total.score < fail_under:
        print(f"mutation: score {total.score:.1f}% is under {fail_under:g}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
