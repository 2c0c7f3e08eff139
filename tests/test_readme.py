"""The README's engine example runs and converges."""

import pathlib
import re

import bson

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_and_converges(capsys):
    block = re.search(r"```python engine-example\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README lost its python example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    alice, bob = namespace["alice"], namespace["bob"]
    assert alice.snapshot() == bob.snapshot()
    assert bson.decode(alice.snapshot())["views"] == 2
    assert "Hello, world" in capsys.readouterr().out
