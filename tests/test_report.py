"""`report` and `compare` end to end: the page's sections and numbers, the paired comparison, and
the page in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnrec_cli.cli.app import app
from rnnrec_cli.reporting.build import num

from .conftest import synthetic_log
from .test_tasks import _valued_log

# End to end: train, evaluate, then report and compare.
pytestmark = pytest.mark.slow

runner = CliRunner()
TINY = ["--layers", "16", "--epochs", "2", "--batch-size", "16", "--bptt", "4", "-q"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    synthetic_log(n_users=80, n_items=40).write_csv(tmp / "events.csv")
    _ok(["prepare", str(tmp / "events.csv"), "-o", str(tmp / "data"), "--split", "time:0.2", "--valid", "0.1", "-q"])
    _ok(["train", str(tmp / "data"), "-o", str(tmp / "gru"), "--seed", "0", *TINY])
    _ok(["train", str(tmp / "data"), "-o", str(tmp / "lstm"), "--seed", "1", "--cell", "lstm", *TINY])
    for run in ("gru", "lstm"):
        _ok(["evaluate", str(tmp / run), "-q"])
    _valued_log(tmp / "ratings.csv")
    _ok(["prepare", str(tmp / "ratings.csv"), "-o", str(tmp / "vdata"), "--split", "time:0.2", "--valid", "0.1",
         "--min-item-support", "2", "-q"])  # fmt: skip
    _ok(["train", str(tmp / "vdata"), "-o", str(tmp / "value"), "--task", "value", *TINY])
    _ok(["evaluate", str(tmp / "value"), "-q"])
    return {"root": tmp, "gru": tmp / "gru", "lstm": tmp / "lstm", "value": tmp / "value"}


def _report(paths: list[Path], out: Path) -> str:
    assert _ok(["report", *map(str, paths), "-o", str(out)]).strip() == str(out)
    return out.read_text()


def _cells(html: str) -> str:
    """The page's text with tags removed, so numbers can be found in order."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_next_item_report_has_every_section_and_the_evaluated_numbers(runs, tmp_path: Path) -> None:
    html = _report([runs["gru"]], tmp_path / "r.html")
    result = json.loads((runs["gru"] / "eval" / "default" / "test.json").read_text())
    for section in ("run-0-what", "run-0-learning", "run-0-test-metrics", "run-0-test-paired", "run-0-test-curves",
                    "run-0-test-breakdown", "run-0-test-beyond"):  # fmt: skip
        assert f'id="{section}"' in html, section
    text = _cells(html)
    for name, metrics in {result["model"]: result["metrics"], **result["baselines"]}.items():
        row = text[text.index(f" {name} ", text.index("Test metrics")) :]
        for key in ("recall@20", "mrr@20", "ndcg@20"):
            assert num(metrics[key]) in row[:2000], (name, key)
    ci = result["ci"][result["model"]]["mrr@20"]
    assert f"[{num(ci[0])}, {num(ci[1])}]" in text
    paired = result["paired"]
    assert paired["against"] in text and num(paired["diff"]["mrr@20"]) in text
    # Offline: no script, stylesheet, image or font fetched from anywhere.
    assert "<script" not in html and "<link" not in html and not re.search(r'(src|href)="(https?:)?//', html)
    assert html.count("<svg") >= 3  # learning curves, metric@K curves, breakdowns


def test_value_run_report_shows_its_metrics_and_baselines(runs, tmp_path: Path) -> None:
    html = _report([runs["value"]], tmp_path / "v.html")
    result = json.loads((runs["value"] / "eval" / "default" / "test.json").read_text())
    assert result["task"] == "value"
    text = _cells(html)
    assert "Value prediction" in text
    for name, errors in result["value"]["metrics"].items():
        assert name in text and num(errors["rmse"]) in text and num(errors["mae"]) in text, name


def test_two_run_report_compares_and_highlights_config_differences(runs, tmp_path: Path) -> None:
    html = _report([runs["gru"], runs["lstm"]], tmp_path / "two.html")
    assert 'id="comparison"' in html and 'id="run-0"' in html and 'id="run-1"' in html
    differing = re.findall(r'<tr class="differs"><td class="name">([^<]+)</td>', html)
    assert "model.cell" in differing and "train.seed" in differing and "model.layers" not in differing
    for run in ("gru", "lstm"):
        metrics = json.loads((runs[run] / "eval" / "default" / "test.json").read_text())["metrics"]
        assert num(metrics["mrr@20"]) in html


def test_compare_pairs_runs_on_the_same_targets(runs) -> None:
    out = json.loads(_ok(["compare", str(runs["gru"]), str(runs["lstm"]), "--metric", "recall@10", "--json"]))
    first, second = out["runs"]
    assert out["metric"] == "recall@10" and first["model"] == "gru" and second["model"] == "lstm"
    for metric in ("recall@10", "mrr@10", "ndcg@10"):
        d = second["vs_first"][metric]
        assert d["diff"] == pytest.approx(second["metrics"][metric] - first["metrics"][metric], abs=1e-9)
        assert d["ci"][0] <= d["diff"] <= d["ci"][1] and 0 <= d["p"] <= 1
    # The table on stderr names both runs and the tested metric.
    table = runner.invoke(app, ["compare", str(runs["gru"]), str(runs["lstm"])])
    assert table.exit_code == 0 and "lstm" in table.output and "mrr@20" in table.output
    assert re.search(r"p (=|<) 0\.\d{3}", table.output) and "p=" not in table.output, table.output


def test_compare_refuses_runs_evaluated_on_other_targets(runs) -> None:
    result = runner.invoke(app, ["compare", str(runs["gru"]), str(runs["value"])])
    assert result.exit_code == 1
    assert "Error:" in result.output and "ranks no items (its task is value)" in result.output, result.output
    # Another split of the same events: other test targets, each run consistent with itself.
    root = runs["root"]
    _ok(
        ["prepare", str(root / "events.csv"), "-o", str(root / "data30"), "--split", "time:0.3", "--valid", "0.1", "-q"]
    )
    other = root / "gru-other-split"
    _ok(["train", str(root / "data30"), "-o", str(other), "--seed", "0", *TINY])
    _ok(["evaluate", str(other), "-q", "--bootstrap", "100"])
    result = runner.invoke(app, ["compare", str(runs["gru"]), str(other)])
    assert result.exit_code == 1 and "other test targets" in result.output, result.output
    bad = runner.invoke(app, ["compare", str(runs["gru"]), str(runs["lstm"]), "--metric", "auc"])
    assert bad.exit_code == 2 and "recall@K" in bad.output


# trials.csv as `tune` writes it (training.trials.write_results).
TRIALS = (
    "number,state,value,epochs,seconds,lr,worker,run_dir,error\r\n0,COMPLETE,0.120000,2,1.5,0.05,w0,/s/0000,\r\n"
    "1,PRUNED,,1,0.7,0.5,w0,/s/0001,\r\n2,COMPLETE,0.150000,2,1.4,0.1,w1,/s/0002,\r\n"
)


def test_study_directory_report(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    (study / "trials.csv").write_text(TRIALS)
    (study / "best.json").write_text(json.dumps({"model": {"layers": [64]}, "train": {"lr": 0.1}}))
    html = _report([study], tmp_path / "s.html")
    assert 'id="study-0"' in html and "optimisation history" in html and "PRUNED" in html and "0.15" in html


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TRIALS[:-30], "trials.csv: the last line is cut off (no line end)"),
        (TRIALS[: TRIALS.index("0.7")] + "\r\n", "trials.csv line 3: 5 fields for 9 columns"),
        ("number,value,state\r\n0,0.12,COMPLETE\r\n", "trials.csv line 1: not the header `rnnrec tune` writes"),
        ("", "trials.csv line 1: not the header"),
        (TRIALS.replace("0.150000", "inf"), "trials.csv line 4: value 'inf' is not a finite number"),
        (TRIALS.replace("2,COMPLETE", "3,COMPLETE"), "trials.csv line 4: trial number '3' where trial 2 belongs"),
        (TRIALS.replace("PRUNED", "DONE"), "trials.csv line 3: state 'DONE' is not one of"),
        (TRIALS.replace(",1,0.7,", ",x,0.7,"), "trials.csv line 3: epochs 'x' is not a count"),
    ],
    ids=["cut-mid-row", "short-row", "other-header", "empty", "inf-value", "renumbered", "unknown-state", "epochs"],
)
def test_study_report_refuses_a_cut_off_or_edited_trials_csv(tmp_path: Path, text: str, message: str) -> None:
    study = tmp_path / "study"
    study.mkdir()
    (study / "trials.csv").write_text(text, newline="")
    result = runner.invoke(app, ["report", str(study), "-o", str(tmp_path / "s.html")])
    assert result.exit_code == 1 and message in result.output, result.output
    assert result.output.count("Error:") == 1 and "rnnrec tune" in result.output


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_report_lists_every_evaluation_and_eval_picks_the_one_shown(runs, tmp_path: Path) -> None:
    run = _copy(runs["gru"], tmp_path / "gru")
    _ok(["evaluate", str(run), "--exclude-seen", "--baselines", "pop", "--bootstrap", "100", "-q"])
    other = json.loads((run / "eval" / "exclude-seen" / "test.json").read_text())
    default = json.loads((run / "eval" / "default" / "test.json").read_text())
    shown = runner.invoke(app, ["report", str(run), "-o", str(tmp_path / "r.html")])
    assert shown.exit_code == 0, shown.output
    html = (tmp_path / "r.html").read_text()
    text = _cells(html)
    # Both evaluations listed with their protocol; the default one shown in full, and said so.
    rows = re.findall(
        r'<tr class="[^"]*"><td class="name">([^<]+)</td><td>([^<]*)</td><td>[^<]*</td><td>([^<]+)<', html
    )
    assert ("exclude-seen", "", "--exclude-seen") in rows
    # The default evaluation applies the repeat weight training chose, and says so.
    boost = default["protocol"]["repeat"]
    assert (
        "default",
        "shown below",
        f"default options (repeat weight {boost['weight']:g} chosen on {boost['chosen_on']})",
    ) in rows
    assert "Test metrics of evaluation default" in text and num(default["metrics"]["mrr@20"]) in text
    # What one evaluation has and the other lacks: on stderr and on the page.
    lacking = "evaluation 'exclude-seen' of run gru has no baselines 'spop', 'markov', 'iknn', 'sknn'"
    assert lacking in shown.stderr and lacking in html.replace("&#39;", "'")
    assert "showing evaluation 'default'" in shown.stderr and "Warning" not in shown.stderr
    picked = runner.invoke(app, ["report", str(run), "--eval", "exclude-seen", "-o", str(tmp_path / "e.html")])
    assert picked.exit_code == 0, picked.output
    text = _cells((tmp_path / "e.html").read_text())
    assert "Test metrics of evaluation exclude-seen" in text and num(other["metrics"]["mrr@20"]) in text
    missing = runner.invoke(app, ["report", str(run), "--eval", "nope", "-o", str(tmp_path / "n.html")])
    assert missing.exit_code == 1 and "--eval 'nope'" in missing.output and "'exclude-seen'" in missing.output


def test_a_baseline_missing_in_one_run_is_noted_by_report_and_compare(runs, tmp_path: Path) -> None:
    lstm = _copy(runs["lstm"], tmp_path / "lstm")
    shutil.rmtree(lstm / "eval")
    _ok(["evaluate", str(lstm), "--baselines", "pop", "--bootstrap", "100", "-q"])
    note = "run lstm has no baselines 'spop', 'markov', 'iknn', 'sknn' in evaluation 'default'"
    page = runner.invoke(app, ["report", str(runs["gru"]), str(lstm), "-o", str(tmp_path / "two.html")])
    assert page.exit_code == 0, page.output
    html = (tmp_path / "two.html").read_text()
    assert note in page.stderr and note in html.replace("&#39;", "'")
    # The side-by-side table: intervals, and the paired test of the second run against the first.
    table = _cells(html[html.index('id="side-by-side"') : html.index("</table>", html.index('id="side-by-side"'))])
    first = json.loads((runs["gru"] / "eval" / "default" / "test.json").read_text())
    assert _interval_text(first["ci"]["gru"]["mrr@20"]) in table
    assert re.search(r"vs first: [+-]\d\.\d{4} \[[+-]?\d\.\d{4}, [+-]?\d\.\d{4}\], p (=|&lt;) 0\.\d{3}", table), table
    compared = runner.invoke(app, ["compare", str(runs["gru"]), str(lstm)])
    assert compared.exit_code == 0 and "note:" in compared.stderr and "has no baselines 'spop'" in compared.stderr
    wrong = runner.invoke(app, ["compare", str(runs["gru"]), str(lstm), "--eval", "exclude-seen"])
    assert wrong.exit_code == 1 and "--eval 'exclude-seen'" in wrong.output and "Traceback" not in wrong.output


def _interval_text(ci: list[float]) -> str:
    return f"[{num(ci[0])}, {num(ci[1])}]"


def _browser() -> str | None:
    for path in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or ""):
        if path and Path(path).is_file():
            return path
    return None


def test_report_in_a_real_browser(runs, tmp_path: Path) -> None:
    """Headless Chromium opens the pages from disk at 1280 px: no console errors, no failed
    request, no horizontal scrollbar (wide tables scroll inside their own box) for one run, a run
    without validation and two runs, and a screenshot that is not blank (kept in tests/artifacts/
    for the README)."""
    chromium = _browser()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (.ci/run installs the distribution's package)")
        pytest.skip("no Chromium here; .ci/run installs it")
    from playwright.sync_api import sync_playwright

    root = runs["root"]
    novalid = root / "novalid"
    if not novalid.exists():
        _ok(["prepare", str(root / "events.csv"), "-o", str(root / "data-nv"), "--split", "time:0.2", "--valid", "0",
             "-q"])  # fmt: skip
        _ok(["train", str(root / "data-nv"), "-o", str(novalid), *TINY])
        _ok(["evaluate", str(novalid), "-q", "--bootstrap", "100"])
    pages = {
        "one": _report([runs["gru"]], tmp_path / "one.html"),
        "novalid": _report([novalid], tmp_path / "novalid.html"),
        "two": _report([runs["gru"], runs["lstm"]], tmp_path / "report.html"),
    }
    # The empty validation panel is left out; a run with validation keeps its panel.
    assert ">validation</text>" not in pages["novalid"] and ">validation</text>" in pages["one"]
    problems: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    widths = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on(
            "console",
            lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        for name in pages:
            page.goto((tmp_path / f"{name}.html" if name != "two" else tmp_path / "report.html").as_uri(),
                      wait_until="load")  # fmt: skip
            assert page.title().startswith("rnnrec report")
            widths[name] = page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth,"
                # Anything outside a scroll box (inside one, a wide table scrolls: it is clipped).
                " Math.max(...[...document.querySelectorAll('body *')].filter(e => !e.parentElement.closest('.scroll'))"
                ".map(e => e.getBoundingClientRect().right)),"
                " Math.max(...[...document.querySelectorAll('.scroll')].map(e => e.scrollWidth))]"
            )
        assert page.locator("svg").count() >= 5
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    assert not problems, problems
    # The test can fail: the one-run metrics table is wider than the window, so without its
    # scroll box it would widen the page.
    assert widths["one"][3] > 1280, widths
    for name, (scroll, client, right, _) in widths.items():
        assert client == 1280 or client > 1200, (name, client)
        assert scroll <= client and right <= client + 0.5, (
            f"{name}: the page is {scroll} px wide in a {client} px window"
        )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 900 and pixels.std() > 0.05, "the screenshot is blank"
    assert (pixels[..., :3].mean(axis=2) < 0.5).mean() > 0.01, "nothing dark (text, lines) was drawn"
    np.testing.assert_array_less(0, pixels.shape)


def _edit(path: Path, change) -> None:
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def _append(line: str):
    return lambda run: (run / "metrics.jsonl").open("a").write(line + "\n")


def _eval(change):
    return lambda run: _edit(run / "eval" / "default" / "test.json", change)


# Hand edits `report` and `compare` once crashed on (exit 70) or drew as real: (edit, file, what the
# one error line names, whether compare reads that file too).
EDITS = {
    "duplicate-epoch": (_append('{"epoch": 2, "train/loss": 1.0, "best": false}'), "metrics.jsonl",
                        "line 3: epoch 2 follows epoch 2", False),
    "null-seconds": (_append('{"epoch": 3, "train/loss": 1.0, "seconds": null}'), "metrics.jsonl",
                     "line 3: 'seconds' is None", False),
    "huge-interval": (_eval(lambda r: r["ci"]["gru"].update({"mrr@20": [1e308, float("inf")]})), "test.json",
                      "'ci' [gru] [mrr@20] is [1e+308, inf]", True),
    "huge-count": (_eval(lambda r: r.update(n_items=10**400)), "test.json", "'n_items' is 1000", True),
    "inf-paired-diff": (_eval(lambda r: r["paired"]["diff"].update({"mrr@20": float("inf")})), "test.json",
                        "'paired' [diff] [mrr@20] is inf", True),
    "text-p-value": (_eval(lambda r: r["paired"]["p"].update({"mrr@20": "x"})), "test.json",
                     "'paired' [p] [mrr@20] is 'x'", True),
    "paired-ci-missing": (_eval(lambda r: r["paired"]["ci"].pop("mrr@20")), "test.json",
                          "'paired' [diff], [ci] and [p] do not hold the same metrics", True),
    "paired-against-unknown": (_eval(lambda r: r["paired"].update(against="nobody")), "test.json",
                               "'paired' [against] is 'nobody'", True),
    "empty-breakdown": (_eval(lambda r: r["breakdown"].update(position={"gru": {}})), "test.json",
                        "'breakdown' [position] [gru] is {}", True),
    "protocol-text": (_eval(lambda r: r.update(protocol="x")), "test.json", "'protocol' is 'x'", True),
    "null-seconds-in-eval": (_eval(lambda r: r.update(seconds=None)), "test.json", "unknown field 'seconds'", True),
    "stages-text": (lambda run: _edit(run / "data_manifest.json", lambda m: m.update(stages="x")),
                    "data_manifest.json", "'stages' must be an object", False),
    "split-rule-list": (lambda run: _edit(run / "data_manifest.json", lambda m: m["stages"].update(split_rule=[1])),
                        "data_manifest.json", "'split_rule' maps splits to rules", False),
}  # fmt: skip


@pytest.mark.parametrize("case", list(EDITS))
def test_a_hand_edited_run_is_one_error_naming_the_file_and_field(runs, tmp_path: Path, case: str) -> None:
    edit, name, field, compared = EDITS[case]
    run = _copy(runs["gru"], tmp_path / "gru")
    edit(run)
    commands = [["report", str(run), "-o", str(tmp_path / "r.html")]]
    commands += [["compare", str(run), str(runs["lstm"])]] if compared else []
    for args in commands:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args[0], result.output)
        error = result.output.strip().splitlines()[-1]
        assert error.startswith("Error: ") and name in error and field in error, (args[0], result.output)
        assert result.output.count("Error:") == 1 and "bug" not in result.output


@pytest.mark.parametrize("name", ["$\\alpha^{x}$", "x$\\frac{1}$y", "p$^$q", "<b>&amp;"])
def test_run_names_are_drawn_and_shown_as_text_never_markup(runs, tmp_path: Path, name: str) -> None:
    """A run's name (its directory) is in the page's tables and in every figure's legend: as the
    very text, not mathtext (`$...$` drawn as a formula, or an error) and not HTML."""
    run = _copy(runs["gru"], tmp_path / name)
    html = _report([run, runs["lstm"]], tmp_path / "r.html")
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    legends = re.findall(r"<text[^>]*>([^<]*)</text>", html[html.index('id="comparison"') :])
    assert escaped in legends, legends
    assert f"<h2>Run {escaped}</h2>" in html and "<b>&amp;" not in html
