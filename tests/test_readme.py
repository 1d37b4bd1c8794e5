"""The README's Python examples run and say what they claim."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    exec(compile("\n".join(blocks), str(README), "exec"), {})
    assert "fastconv.conv2d: backend" in capsys.readouterr().out


def test_readme_starts_with_the_two_commands():
    commands = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)[:2]
    assert commands[0].strip() == "pip install . && python -m fastconv bench"
    assert commands[1].strip() == 'pip install ".[test]" && python -m pytest'
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
