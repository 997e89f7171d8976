"""The README and the docs agree with what the repository runs: CI runs the README's test command
verbatim, every link in the README resolves, every page is in the site's navigation, and the
README's examples are the ones the docs show."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_ci_runs_the_readme_test_command_verbatim_as_its_last_line():
    main_job, tests = _bash_blocks(README)[:2]
    assert main_job.strip().endswith(".venv/bin/slt-probe run models/omnigrok_mnist.toml")
    assert tests.strip().endswith(".venv/bin/python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == tests.strip()


def test_readme_is_short_and_its_links_resolve():
    assert len(README.splitlines()) < 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10
    missing = [link for link in local if not (ROOT / link).is_file()]
    assert not missing, missing


def test_every_docs_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert pages, "docs/ is empty"
    assert [p for p in pages if f" {p}\n" not in nav] == []


def test_getting_started_shows_the_readme_example():
    python = re.findall(r"```python\n(.*?)```", README, re.S)
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert "estimate_llc(model" in python[0] and python[0] in index
