"""index.html in a real browser: headless Chromium opens a copy of the page *alone* in an
empty folder (as a reader who was sent the file would), and every figure and every
equation must have a size, with no error on the console. Skipped where ``chromium`` is not
installed.

How: the test copy gets a small probe script at the top of its <head> (the report itself
has no script). It records errors (``window.onerror`` in the capture phase also sees a
resource that fails to load; ``console.error`` is wrapped) and, once the page has loaded,
measures every ``img``, ``svg`` and ``math`` element and writes it all as JSON into the
DOM, which ``chromium --dump-dom`` prints. Chromium runs with a throw-away profile and
HOME in the test's tmp folder.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pytest

from gateflow.jobs._report import ReportConfig, write_report

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

#: The command that opens a page and prints its DOM once loaded (HOME and the profile in
#: ``tmp``; the budget lets the load event fire, with no real waiting).
DUMP = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-extensions", "--virtual-time-budget=5000", "--dump-dom")

PROBE = """<script>
window.__gateflow = {errors: []};
window.addEventListener("error", e => window.__gateflow.errors.push("error: " + (e.message ||
  (e.target && (e.target.currentSrc || e.target.src || e.target.href)) || "a resource")), true);
window.addEventListener("unhandledrejection", e => window.__gateflow.errors.push(
  "unhandled rejection: " + e.reason));
const consoleError = console.error.bind(console);
console.error = (...args) => { window.__gateflow.errors.push("console.error: " +
  args.join(" ")); consoleError(...args); };
window.addEventListener("load", () => {
  const items = [];
  for (const el of document.querySelectorAll("img, svg, math")) {
    const r = el.getBoundingClientRect();
    items.push({tag: el.localName, ns: el.namespaceURI, width: r.width, height: r.height,
                natural: el.naturalWidth === undefined ? null : el.naturalWidth,
                complete: el.complete === undefined ? null : el.complete});
  }
  const out = document.createElement("pre");
  out.id = "gateflow-probe";
  out.textContent = JSON.stringify({errors: window.__gateflow.errors, items: items});
  document.body.appendChild(out);
});
</script>"""

MATHML = "http://www.w3.org/1998/Math/MathML"


def _env(tmp_path):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache")}


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run([CHROMIUM, *args[:-1], f"--user-data-dir={profile}", args[-1]],
                          capture_output=True, text=True, timeout=120, env=_env(tmp_path),
                          check=False)


def _alone(page: str, tmp_path, name: str = "alone"):
    """``page`` with the probe, as index.html alone in an empty folder."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "index.html").write_text(page.replace("<head>", "<head>\n" + PROBE, 1),
                                       encoding="utf-8")
    assert [p.name for p in folder.iterdir()] == ["index.html"]
    return folder / "index.html"


def probe(page: str, tmp_path, name: str = "alone") -> dict:
    """Open ``page`` alone in headless Chromium; what the probe saw."""
    path = _alone(page, tmp_path, name)
    done = _chromium(tmp_path, *DUMP, path.as_uri())
    m = re.search(r'<pre id="gateflow-probe">(.*?)</pre>', done.stdout, re.S)
    assert m, f"no probe output (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def check(result: dict, *, figures: int, equations: int) -> None:
    """No error; ``figures`` images, each loaded with a size; ``equations`` MathML
    elements, each with a size."""
    assert result["errors"] == [], result["errors"]
    imgs = [i for i in result["items"] if i["tag"] == "img"]
    maths = [i for i in result["items"] if i["tag"] == "math"]
    assert len(imgs) == figures, imgs
    for i in imgs:
        assert i["complete"] and i["natural"] > 0, i
        assert i["width"] > 100 and i["height"] > 100, i
    assert len(maths) == equations
    for i in maths:
        assert i["ns"] == MATHML, i  # parsed as MathML, so typeset
        assert i["width"] > 0 and i["height"] > 0, i


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "r"
    write_report(ReportConfig(hidden=4, inputs=3, steps=12, batch=2, spectra_lags=(1, 12),
                              biases=(0.0, 3.0)), out, quiet=True)
    page = (out / "index.html").read_text(encoding="utf-8")
    return page, page.count("<img "), page.count("<math")


def test_the_page_alone_shows_every_figure_and_equation(report, tmp_path):
    page, figures, equations = report
    assert figures == 4 and equations > 50
    check(probe(page, tmp_path), figures=figures, equations=equations)


def test_the_check_fails_on_a_broken_figure(report, tmp_path):
    """The check can fail: a figure that links a file not sent with the page (as the old
    report did) is caught, both as a load error and as an image with no pixels."""
    page, figures, equations = report
    broken = re.sub(r'src="data:image/svg\+xml;base64,[^"]*"', 'src="decay_cells.svg"', page,
                    count=1)
    result = probe(broken, tmp_path)
    assert any("decay_cells.svg" in e for e in result["errors"]), result["errors"]
    assert any(i["tag"] == "img" and not i["natural"] for i in result["items"])
    with pytest.raises(AssertionError):
        check(result, figures=figures, equations=equations)


def test_the_check_fails_on_a_console_error_or_a_lost_equation(report, tmp_path):
    page, figures, equations = report
    noisy = page.replace("</body>", '<script>console.error("boom")</script></body>', 1)
    result = probe(noisy, tmp_path, "noisy")
    assert result["errors"] == ["console.error: boom"]
    with pytest.raises(AssertionError):
        check(result, figures=figures, equations=equations)
    empty = page.replace("<math", '<math style="display:none"', 1)
    with pytest.raises(AssertionError):
        check(probe(empty, tmp_path, "empty"), figures=figures, equations=equations)


def test_screenshot_of_the_page_alone(report, tmp_path):
    """The page alone renders to a screenshot with something on it (the command to paste:
    ``chromium --headless=new --no-sandbox --disable-gpu --user-data-dir=$(mktemp -d)
    --hide-scrollbars --window-size=1200,3000 --screenshot=page.png file:///…/index.html``)."""
    import numpy as np
    from PIL import Image

    page, _, _ = report
    path = _alone(page, tmp_path)
    shot = tmp_path / "page.png"
    done = _chromium(tmp_path, "--headless=new", "--no-sandbox", "--disable-gpu",
                     "--hide-scrollbars", "--window-size=1200,3000", f"--screenshot={shot}",
                     path.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (3000, 1200)
    assert (pixels < 200).mean() > 0.02  # text, figures and formulas, not a blank page
