"""Every chapter executes at the `ci` profile, and the HTML book builds from those notebooks,
with math, figures and the run reports, loading nothing from the network."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from flatbook.book.registry import chapters
from flatbook.claims import ROLE_OUTCOMES, Claim, claims_in_notebook, facts_in_notebook
from flatbook.book.runner import REPORT_CELL_TAG, run_chapter
from flatbook.book.site import build_html, external_resources

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = [c.name for c in chapters(ROOT)]


@pytest.fixture(scope="session")
def executed(tmp_path_factory) -> Path:
    """Every chapter executed once at the ci profile (shared by the tests below)."""
    folder = tmp_path_factory.mktemp("executed")
    saved = os.environ.get("FLATBOOK_RESULTS")
    os.environ["FLATBOOK_RESULTS"] = str(tmp_path_factory.mktemp("results"))  # trained models: not the user's cache
    (folder / "results_dir.txt").write_text(os.environ["FLATBOOK_RESULTS"])
    try:
        for name in CHAPTERS:
            run_chapter(name, profile="ci", root=ROOT, output=folder / f"{name}.ipynb", progress=False)
    finally:
        if saved is None:
            os.environ.pop("FLATBOOK_RESULTS", None)
        else:
            os.environ["FLATBOOK_RESULTS"] = saved
    return folder


def chapter_claims(name: str, executed: Path) -> list[Claim]:
    """The Claim objects a chapter showed (read back from the machine-readable copy of its output)."""
    found = claims_in_notebook(executed / f"{name}.ipynb")
    assert found, f"no claims shown in {name}"
    return found


@pytest.fixture(scope="session")
def html(executed, tmp_path_factory) -> Path:
    out_root = tmp_path_factory.mktemp("site")
    return build_html(executed_dir=executed, root=ROOT, output_root=out_root, echo=lambda *_: None)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_executes_at_ci_without_errors(executed, name):
    nb = nbformat.read(str(executed / f"{name}.ipynb"), as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    bars = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "stream" and o.name == "stderr" and "%|" in o.text]
    assert not bars  # progress bars are stripped from the rendered outputs
    assert nb.metadata.flatbook["profile"] == "ci"
    assert any(REPORT_CELL_TAG in c.metadata.get("tags", []) for c in nb.cells)


@pytest.mark.slow
def test_gedanken_results(executed):
    nb = nbformat.read(str(executed / "gedanken.ipynb"), as_version=4)
    text = "\n".join(
        str(o.get("data", {}).get("text/markdown", "")) + str(o.get("data", {}).get("text/latex", ""))
        + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert r"\frac{61}{4 e^{3}}" in text  # Tr(H) at the counter-example, exactly
    assert "Tr(H) = 0.759253, λ₁(H) = 0.621354" in text and "**Tr(H) = λ₁(H) fails**" in text
    assert "the term Eq. (3) drops is **non-zero**" in text
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 3  # eigenvalues vs trace, measures along rays, sharpness vs loss


@pytest.mark.slow
def test_scoreboard_opens_the_book_with_one_row_per_paper_claim_and_chapter(executed, html):
    from flatbook.book.scoreboard import scoreboard_rows
    from flatbook.chapters.paper_claims import PAPER_CLAIMS

    rows = scoreboard_rows(executed)
    assert [(r.claim, r.chapter) for r in rows] == [(p.name, c) for p in PAPER_CLAIMS for c in p.chapters]
    assert all(r.verdict in ROLE_OUTCOMES["paper"] for r in rows)  # every chapter ran and tagged its parts
    assert "scoreboard.html" in (html / "index.html").read_text()  # the root page: the book opens with it
    page = (html / "book" / "scoreboard.html").read_text()
    assert "the scoreboard" in page and "<table" in page and "flatbook:scoreboard" not in page
    for r in rows:  # every row's verdict, computed from the executed chapter, is on the opening page
        assert r.chapter in page or r.title in page
    assert page.count("<tr") >= len(rows) + 1


@pytest.mark.slow
def test_html_book_builds_offline(html):
    assert (html / "index.html").is_file()
    page = (html / "book" / "gedanken.html").read_text()
    assert "How this page was computed" in page
    assert r"\nabla^2 L" in page and "Tr(H) = λ₁(H) fails" in page
    assert page.count("<img") >= 3
    assert "num_scales = 25" not in page  # papermill's injected cell is removed
    mathjax = [line for line in page.splitlines() if "tex-chtml.js" in line]
    assert mathjax and "http" not in mathjax[0]
    assert (html / "mathjax" / "tex-chtml.js").is_file()
    assert (html / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    assert external_resources(html) == {}
    assert "thebe" not in page.lower()  # Jupyter Book's remote-kernel scripts are stripped
    refs = (html / "book" / "references.html").read_text()
    assert "Flatness is a False Friend" in refs and "Dinh" in refs


@pytest.mark.slow
def test_the_library_part_renders_with_an_api_reference_from_the_docstrings(html):
    """The book's part "The flatbook library": the guides, and the API pages that autodoc generated
    (signatures, and docstrings shown verbatim, maths and all), in a build without warnings."""
    library = html / "book" / "library"
    for page, text in (("running", "chapter_workers"), ("guide", "HessianOperator"), ("scale", "torchrun"),
                       ("contributing", "Adding a chapter")):
        assert text in (library / f"{page}.html").read_text(), page
    api = (library / "api.html").read_text()
    for name in ("flatbook.curvature.HessianOperator", "flatbook.spectrum.slq", "flatbook.spectrum.lanczos",
                 "flatbook.spectrum.top_eigenvalues", "flatbook.experiments.Config", "flatbook.claims.Claim",
                 "module-flatbook.theory.exact"):
        assert f'id="{name}"' in api, name
    assert "Stochastic Lanczos quadrature" in api and "2 * X.T @ X @ v / 50" in api.replace("&#64;", "@")
    assert "||H y - theta y||" in api  # docstrings are preformatted: no reStructuredText reading of |...|
    assert "API reference" in (html / "book" / "scoreboard.html").read_text()  # the sidebar lists the part


def test_external_resources_are_detected(tmp_path):
    (tmp_path / "a.html").write_text(
        '<html><head><script src="https://cdn.example/x.js"></script>'
        '<link rel="stylesheet" href="//fonts.example/f.css"><link rel="next" href="https://ok.example/">'
        '<link rel="preconnect" href="https://fonts.gstatic.example">'
        '<script>const URL = "https://unpkg.example/thebe.js"; const local = "_static/x.js";</script>'
        '<style>@font-face { src: url("https://fonts.example/a.woff2"); }</style>'
        '</head><body><a href="https://links.are.fine/">x</a><script src="_static/local.js"></script>'
        '<div style="background: url(//img.example/b.png)"></div></body></html>'
    )
    (tmp_path / "s.css").write_text('@import url("https://fonts.example/g.css"); .x { background: url(local.png) }')
    (tmp_path / "ok.css").write_text('.y { background: url("../img/local.png") }')
    found = external_resources(tmp_path)
    assert found == {
        "a.html": ["<script> https://cdn.example/x.js", "<link> //fonts.example/f.css",
                   "<link> https://fonts.gstatic.example", "<script> inline https://unpkg.example/thebe.js",
                   "<style> https://fonts.example/a.woff2", "<div> //img.example/b.png"],
        "s.css": ["css https://fonts.example/g.css"],
    }


@pytest.mark.slow
def test_cli_run_gedanken_with_depth_4(tmp_path):
    out = tmp_path / "g4.ipynb"
    res = run_cli("run", "gedanken", "--profile", "ci", "-p", "depth", "4", "--output", str(out))
    assert res.returncode == 0, res.stderr
    nb = nbformat.read(str(out), as_version=4)
    assert nb.metadata.flatbook["parameters"]["depth"] == 4
    assert "w_{4}" in str(nb.cells)


@pytest.mark.slow
def test_plain_papermill_works(tmp_path):
    papermill = Path(sys.executable).with_name("papermill")
    out = tmp_path / "p.ipynb"
    res = subprocess.run(
        [str(papermill), str(ROOT / "book" / "gedanken.ipynb"), str(out), "-p", "depth", "2", "-p", "num_scales", "10",
         "-p", "verify_depths_up_to", "2", "--no-progress-bar"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Unable to parse" not in res.stderr  # papermill reads every parameter of the cell
    nb = nbformat.read(str(out), as_version=4)
    assert nb.metadata.papermill["parameters"]["depth"] == 2


def test_every_list_or_dict_parameter_is_parsed_when_papermill_passes_text():
    """Plain papermill passes -p weight_decays "[0, 0.001]" as a string: each chapter's setup cell
    (the cell after the parameters cell) must pass every list and dict parameter through
    flatbook.book.parameters.structured before using it."""
    from flatbook.book.parameters import parameters_cell_index, read_parameters

    for chapter in chapters(ROOT):
        nb = nbformat.read(str(chapter.path), as_version=4)
        setup = nb.cells[parameters_cell_index(nb) + 1].source
        for name, p in read_parameters(nb).items():
            if isinstance(p.default, (list, dict, tuple)):
                assert re.search(rf"\bstructured\({name}\)", setup), f"{chapter.name}: {name} is not passed to structured()"


def test_plain_papermill_with_a_list_of_weight_decays(tmp_path):
    """The issue's command, at the ci profile's sizes: papermill book/wd_logreg.ipynb out.ipynb
    -p weight_decays "[0, 0.001]" plus small-model parameters."""
    import yaml

    papermill = Path(sys.executable).with_name("papermill")
    ci = yaml.safe_load((ROOT / "book" / "profiles" / "ci.yaml").read_text())["chapters"]["wd_logreg"]
    args = [str(papermill), str(ROOT / "book" / "wd_logreg.ipynb"), str(tmp_path / "out.ipynb"),
            "-p", "weight_decays", "[0, 0.001]", "--no-progress-bar"]
    for name, value in ci.items():
        if not isinstance(value, list):
            args += ["-p", name, str(value)]
    args += ["-y", f"dense_weight_decays: {ci['dense_weight_decays']}\nseeds: {ci['seeds']}"]
    env = {**os.environ, "FLATBOOK_RESULTS": str(tmp_path / "results")}
    res = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    nb = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert nb.metadata.papermill["parameters"]["weight_decays"] == "[0, 0.001]"  # text, as papermill passes it
    text = "".join(o.get("text", "") + str(o.get("data", {})) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "0.001" in text and "Error" not in text


def test_chapter_check_runs_before_any_kernel(tmp_path):
    out = tmp_path / "never.ipynb"
    for args, message in (
        (("-p", "directions", "5"), "directions must be a non-empty list of lists of 3 numbers, got 5"),
        (("-p", "X", "0"), "X must be a non-zero finite number"),
        (("-p", "depth", "1"), "depth must be an integer >= 2"),
        (("-p", "scale_min", "5"), "need finite numbers with 0 < scale_min < scale_max"),
        (("-p", "depth", "4", "-p", "counterexample_point", "[1, 2, 3]"), "one entry per layer (depth=4)"),
    ):
        res = run_cli("run", "gedanken", *args, "--output", str(out))
        assert res.returncode == 2, args
        assert message in res.stderr and "allowed parameters of 'gedanken'" in res.stderr, res.stderr
        assert "Executing" not in res.stderr  # no kernel was started
        assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", CHAPTERS)
def test_every_chapter_with_experiments_shows_claims_with_one_of_four_outcomes(executed, name):
    nb = nbformat.read(str(executed / f"{name}.ipynb"), as_version=4)
    if not any(c.cell_type == "code" and "claims.show(" in c.source for c in nb.cells):
        pytest.skip(f"{name} shows no claims")
    from flatbook.chapters.paper_claims import claims_of_chapter

    found = chapter_claims(name, executed)
    for c in found:
        assert c.outcome in ROLE_OUTCOMES[c.role]
        assert (c.outcome == "untestable") == bool(c.failed)
        assert c.method and c.effect_name
    # the chapter tags exactly the components of the paper claims it is listed as testing, once each
    expected = sorted((p.name, comp) for p in claims_of_chapter(name) for comp in p.components)
    assert sorted((c.paper_claim, c.component) for c in found if c.primary) == expected, name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["theorem1", "lanczos", "gedanken", "bn_modes"])
def test_exact_claims_hold_at_ci(executed, name):
    """Claims that are exact computations (algebra, closed forms, rescalings) must hold even for the ci
    profile's barely trained models; the asymptotic or statistical ones are reported, not asserted."""
    nb = nbformat.read(str(executed / f"{name}.ipynb"), as_version=4)
    if not any(c.cell_type == "code" and "claims.show(" in c.source for c in nb.cells):
        pytest.skip(f"{name} shows no claims")
    exact = [c for c in chapter_claims(name, executed) if c.method.startswith("exact computation")]
    assert exact, name
    for c in exact:
        assert c.decision == "holds", c.line()


WD_STATEMENTS = ("lambda_1 is larger with more weight decay", "the Hessian trace is larger with more weight decay",
                 "the Hessian Frobenius norm is larger with more weight decay",
                 "validation accuracy is higher with more weight decay",
                 "the weights are smaller with more weight decay (the mechanism)")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wd_logreg", "wd_mlp", "wd_allcnnc", "wd_preresnet", "wd_wrn"])
def test_weight_decay_chapters_gate_their_claims_by_the_regime_at_ci(executed, name):
    found = chapter_claims(name, executed)
    by = {c.statement: c for c in found}
    for statement in WD_STATEMENTS:
        assert statement in by, (name, statement, sorted(by))
    # the ci runs barely train: weight decay acts for E << 1, so every claim but the mechanism is untestable
    for statement in WD_STATEMENTS[:4]:
        c = by[statement]
        assert c.outcome == "untestable" and "decay exponent" in c.failed, c.line()
    assert any(cond.name == "seeds per setting" and cond.value == 2 for cond in by[WD_STATEMENTS[0]].regime)
    # the regime the run measured is in the opening box
    nb = nbformat.read(str(executed / f"{name}.ipynb"), as_version=4)
    box = next(c for c in nb.cells if REPORT_CELL_TAG in c.metadata.get("tags", []))
    assert "Regime measured by this run" in box.source and "decay exponent E by weight decay" in box.source
    assert "chapter default" in box.source  # seeds are the chapter's, not the paper's
    facts = dict(facts_in_notebook(nb))
    assert facts["seeds per weight decay"].startswith("2")


@pytest.mark.slow
def test_adaptive_and_scale_aware_claims_at_ci(executed):
    adaptive_claims = chapter_claims("adaptive", executed)
    assert any(c.statement.startswith("Gadam's solution is sharper than SGD's by lambda_1") for c in adaptive_claims)
    gated = [c for c in adaptive_claims if not c.statement.startswith("Gadam's solution has the higher weight norm")]
    assert len(gated) == 4 and all(c.outcome == "untestable" for c in gated)  # ci: 200 validation images
    bn = chapter_claims("bn_modes", executed)
    assert [c for c in bn if "larger at the largest weight decay" in c.statement]
    for c in bn:
        if "larger at the largest weight decay" in c.statement:
            assert c.outcome == "untestable" and "decay exponent" in c.failed, c.line()
    scale = chapter_claims("scale_aware", executed)
    invariance = [c for c in scale if c.method.startswith("exact computation")]
    assert len(invariance) == 4 and all(c.decision == "holds" for c in invariance), [c.line() for c in invariance]
    from flatbook.chapters.scale_aware import MEASURES, PAPER_MEASURES

    false_friend = [c for c in scale if "false friend" in c.statement]
    works = [c for c in scale if "ranks solutions as flatness should" in c.statement]
    assert len(false_friend) == len(PAPER_MEASURES) and all(c.role == "paper" for c in false_friend)
    assert len(works) == len(MEASURES) - len(PAPER_MEASURES) and all(c.role == "check" for c in works)




def test_each_chapters_plan_is_what_it_trained(executed):
    """``python -m flatbook plan``'s configs are the chapters' own: after the ci run, every planned
    config is in the cache the chapters filled (same cache key), and the CLI writes them as JSON."""
    from flatbook.book.plan import chapter_plan, plan_cost

    cached = {p.name for p in Path((executed / "results_dir.txt").read_text()).iterdir() if (p / "result.json").exists()}
    planned = {}
    for name in CHAPTERS:
        for config in chapter_plan(name, "ci", root=ROOT):
            planned[config.key()] = name
    assert len(planned) >= 20
    missing = {k: n for k, n in planned.items() if k not in cached}
    assert not missing, f"planned but not trained by the chapter: {missing}"
    cost = plan_cost(chapter_plan("wd_wrn", "ci", root=ROOT), tflops=1.0)
    assert cost["runs"] > 0 and cost["flops"] == cost["train_flops"] + cost["hessian_flops"] > 0
    from flatbook.book.plan import ASSUMED_TFLOPS

    other = cost["elementwise_flops"] + cost["optimizer_flops"]
    assert other > 0
    assert cost["hours"] == pytest.approx((cost["flops"] / 1e12 + other / (ASSUMED_TFLOPS["elementwise"] * 1e12)) / 3600)


def test_plan_cli_writes_configs_that_train_reads(tmp_path):
    out = tmp_path / "plan.json"
    res = run_cli("plan", "wd_mlp", "--profile", "ci", "-p", "seeds", "[0, 1, 2]", "--output", str(out))
    assert res.returncode == 0, res.stderr
    configs = json.loads(out.read_text())
    assert len(configs) >= 3 and {c["seed"] for c in configs} == {0, 1, 2}
    assert "wd_mlp" in res.stderr and "PFLOP" in res.stderr
    from flatbook.launch import read_configs

    assert read_configs(str(out)) == configs


def test_the_gpu_profile_is_about_two_hours_by_its_flop_count():
    """The scale page (book/library/scale.md) and the profile say about 2.5 hours at the assumed rates: keep it true."""
    from flatbook.book.plan import DEFAULT_TFLOPS, chapter_plan, plan_cost
    from flatbook.experiments import unique_configs

    planned = []
    for name in CHAPTERS:
        for config in chapter_plan(name, "gpu", root=ROOT):
            planned.append(config)
            assert config.dataset in ("mnist", "cifar100"), (name, config.dataset)
    hours = plan_cost(unique_configs(planned), DEFAULT_TFLOPS)["hours"]
    assert 1.5 <= hours <= 2.5, hours
