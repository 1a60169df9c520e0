"""The commands the docs show are commands ltpnet accepts.

Every `ltpnet run|sweep|fit|experiment ...` line in README.md, docs/ and the config
comments is parsed by ltpnet's own command line and its config (with every `--set`)
is read and checked, as the command would before any work: a renamed key, config or
experiment in the docs fails here. Templates (CONFIG, NAME, `...`, shell variables)
are skipped. README.md opens with its two set-up commands.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

import experiments
from ltpnet import cli
from ltpnet import config as lconfig
from ltpnet import fit as lfit

SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
           *sorted((ROOT / "configs").rglob("*.toml"))]


def commands(text: str, markdown: bool) -> list[str]:
    """`ltpnet ...` command lines of a markdown text (fenced blocks and inline code)
    or a TOML one (its comments), continuations joined and `&&` split."""
    if not markdown:
        lines = [re.sub(r"^\s*#\s?", "", ln) for ln in text.splitlines()
                 if ln.lstrip().startswith("#")]
        chunks = ["\n".join(lines)]
    else:
        chunks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
        chunks += re.findall(r"(?<!`)`([^`\n]+)`(?!`)",
                             re.sub(r"```.*?```", "", text, flags=re.S))
    out = []
    for chunk in chunks:
        for line in re.sub(r"\\\n\s*", " ", chunk).splitlines():
            for part in line.strip().removeprefix("$ ").split("&&"):
                part = part.strip()
                if part.startswith("ltpnet "):
                    # a trailing remark: "   (4 min)" or "   # one run"
                    out.append(re.sub(r"\s{2,}[(#].*$", "", part))
    return out


OPTIONAL = re.compile(r"\s\[--?[a-z][^\]]*\]")  # "[--quick]", "[-o DIR]": left out
PLACEHOLDER = re.compile(r"[A-Z][A-Z_0-9]*(\.[a-z0-9]+)?")  # CONFIG, DIR, FILE.h5


def template(tokens: list[str]) -> bool:
    """A command with a placeholder (CONFIG, DIR, ``...``), a shell variable, or no
    config or name (``ltpnet run --devices 4``: an option named in prose)."""
    def blank(t):
        return (PLACEHOLDER.fullmatch(t.strip("[]")) is not None
                or any(s in t for s in ("...", "|", "$")))
    return len(tokens) < 3 or tokens[2].startswith("-") or any(map(blank, tokens[2:]))


def check_command(line: str) -> None:
    """Parse `line` with ltpnet's command line and read and check its config, with
    every override, as the command does before any work."""
    tokens = shlex.split(OPTIONAL.sub("", line), comments=True)
    args = cli._parser().parse_args(tokens[1:])
    params = args.params if getattr(args, "params", None) and Path(
        ROOT / args.params).is_file() else None  # a fit.json the docs make first
    if args.command in ("run", "sweep"):
        cfg_path = ROOT / args.config
        base = cli._overrides(args)
        lconfig.load_config(cfg_path, base, params)
        for key, values in cli._parse_grid(getattr(args, "grid", None) or []):
            for v in values:
                lconfig.load_config(cfg_path, [*base, f"{key}={v}"], params)
    elif args.command == "fit":
        lfit.load_config(ROOT / args.config, list(args.set or []))
    else:  # experiment (documented() keeps these four commands only)
        names = experiments.available() if args.name == "all" else [args.name]
        for name in names:
            experiments.load(name, quick=args.quick, neurons=args.neurons,
                             overrides=args.set or (), params_file=params,
                             fused=args.fused)


def documented() -> list[tuple[str, str]]:
    found = {}
    for path in SOURCES:
        for line in commands(path.read_text(), path.suffix == ".md"):
            try:
                tokens = shlex.split(OPTIONAL.sub("", line), comments=True)
            except ValueError:  # unbalanced quotes: kept, so that the test shows it
                tokens = line.split()
            if tokens[1] in ("run", "sweep", "fit", "experiment") and not template(
                    tokens):
                found.setdefault(line, str(path.relative_to(ROOT)))
    return sorted((src, line) for line, src in found.items())


DOCUMENTED = documented()


def test_the_docs_show_commands():
    """The collection is not empty: the docs show runs, fits and experiments."""
    kinds = {line.split()[1] for _, line in DOCUMENTED}
    assert {"run", "fit", "experiment"} <= kinds
    assert len(DOCUMENTED) >= 50


@pytest.mark.parametrize(("source", "line"), DOCUMENTED,
                         ids=[f"{s}: {ln[:70]}" for s, ln in DOCUMENTED])
def test_documented_command_is_accepted(source, line, monkeypatch):
    monkeypatch.chdir(ROOT)
    check_command(line)


@pytest.mark.parametrize(("line", "error"), [
    ("ltpnet run configs/default.toml --set plasticity.theta_q=2", "theta_q"),
    ("ltpnet run configs/nonexistent.toml", "nonexistent"),
    ("ltpnet sweep configs/default.toml --grid plasticity.theta_p=1.3,-1", "theta_p"),
    ("ltpnet fit configs/fit/hippocampal.toml --set fit.steps=-5", "steps"),
    ("ltpnet experiment stdp --set experiment.n_pairs=0", "n_pairs"),
    ("ltpnet experiment frequency_respons", "frequency_respons"),
])
def test_a_wrong_command_is_caught(line, error, monkeypatch):
    """The check can fail: a misspelt key, config or experiment, or a bad value."""
    monkeypatch.chdir(ROOT)
    with pytest.raises(Exception, match=error):
        check_command(line)


def test_readme_opens_with_the_two_setup_commands():
    """README.md starts with one block of exactly two commands: install and run the
    main job on the defaults; install the test extra and run the tests."""
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```[^\n]*\n(.*?)```", text, re.S)
    assert text.index(first.group(0)) < text.index("\n## ")
    lines = [ln for ln in first.group(1).splitlines() if ln.strip()]
    assert len(lines) == 2
    install, test = lines
    assert install.startswith("pip install -e . && ltpnet run configs/")
    assert test == 'pip install -e ".[test]" && python -m pytest -q'
    check_command(install.split("&&")[1].strip())


@pytest.mark.slow
def test_readme_python_example_runs(capsys, monkeypatch):
    """The Python API example of README.md, as written (about 3 min on 2 cores): a
    tetanus potentiates S1 and leaves S2 within 5 % (its printed line)."""
    monkeypatch.chdir(ROOT)
    text = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    m = re.fullmatch(r"S1 ([+-]\d+\.\d) %, S2 ([+-]\d+\.\d) %\n", out)
    assert m, out
    assert float(m.group(1)) > 10 and abs(float(m.group(2))) < 5


def test_fitting_python_example_runs(capsys, monkeypatch):
    """The Python API example of docs/fitting.md, as written (under 10 s): it fits
    Bi & Poo's binned window and the dense curve it predicts depresses before 0 ms
    and potentiates after."""
    monkeypatch.chdir(ROOT)
    text = (ROOT / "docs" / "fitting.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    ns = {}
    exec(compile(code, "docs/fitting.md", "exec"), ns)
    assert re.match(r"chi2 \d+\.\d over 8 points;", capsys.readouterr().out)
    dt = np.array([c.dt_ms for c in ns["curve"]])
    ratio = ns["ratio"]
    assert dt[np.argmin(ratio)] < 0 and ratio.min() < 0.95
    assert dt[np.argmax(ratio)] > 0 and ratio.max() > 1.2
    t_d, t_p = ns["t_d"], ns["t_p"]
    assert len(t_d) == len(t_p) == 8 and np.all(t_d >= t_p)


def test_scaling_python_example_runs():
    """The Python example of docs/scaling.md, as written, in a fresh interpreter (its
    XLA_FLAGS must come before JAX loads): four devices, the single run split by
    neurons, the batch of four rates by members."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    code += textwrap.dedent("""
        import jax
        import numpy as np
        assert jax.device_count() == 4
        assert len(result.state.syn.rho.sharding.device_set) == 4
        assert results.state.syn.rho.shape == (4, 400, 100)
        assert len(results.state.syn.rho.sharding.device_set) == 4
        np.testing.assert_array_equal(batch.input.rate, [1.0, 2.0, 4.0, 8.0])
        assert axes.input.rate == 0 and axes.plasticity.theta_p is None
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]
