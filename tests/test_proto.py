"""The proto is a checked contract (docs/compatibility.md): every generated file (Python, Go,
TypeScript) is fresh, the proto passes buf lint, and buf breaking finds no breaking change against
the seed's proto and main's previous commit — and does find one in a renumbered field."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
BUF = PROTO / "node_modules" / ".bin" / "buf"
#: The proto as the seed released it: the commit that added it (its field numbers never change).
SEED_PROTO = "virtualdom/v1/gateway.proto"


def buf(*args: str, cwd: pathlib.Path = PROTO) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed; scripts/test.sh installs buf with npm ci")
        pytest.fail("proto/node_modules is missing: run `npm ci` in proto/ (scripts/test.sh does)")
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, check=False)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def proto_at(commit: str, dest: pathlib.Path) -> pathlib.Path:
    """The .proto files as they were at ``commit``, extracted into ``dest``/proto with today's
    buf.yaml (the seed had none; the module layout is the same)."""
    archive = subprocess.run(
        ["git", "archive", commit, "proto/virtualdom"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    shutil.copy(PROTO / "buf.yaml", dest / "proto" / "buf.yaml")
    return dest / "proto"


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_buf_lint_is_clean() -> None:
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_since_the_seed_and_the_previous_commit(tmp_path: pathlib.Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    seed = git("log", "--diff-filter=A", "--format=%H", "--", f"proto/{SEED_PROTO}").splitlines()
    assert seed, "no commit added the proto"
    baselines = {"seed": seed[-1]}
    previous = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "HEAD~1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if previous:
        baselines["previous commit"] = previous
    for name, commit in baselines.items():
        against = proto_at(commit, tmp_path / name.replace(" ", "_"))
        result = buf("breaking", "--against", str(against))
        assert result.returncode == 0, f"breaking change against the {name} ({commit}):\n" + (
            result.stdout + result.stderr
        )


def test_buf_breaking_fails_on_a_renumbered_field(tmp_path: pathlib.Path) -> None:
    changed = tmp_path / "proto"
    shutil.copytree(PROTO / "virtualdom", changed / "virtualdom")
    shutil.copy(PROTO / "buf.yaml", changed / "buf.yaml")
    path = changed / SEED_PROTO
    text = path.read_text()
    assert text.count("  string actor = 7;\n") == 1
    path.write_text(text.replace("  string actor = 7;\n", "  string actor = 8;\n"))
    result = buf("breaking", "--against", str(PROTO), cwd=changed)
    assert result.returncode != 0
    assert 'field "7" with name "actor" on message "WriteDiffRequest"' in result.stdout, (
        result.stdout + result.stderr
    )


def test_engine_never_imports_generated_code() -> None:
    for path in (ROOT / "engine").glob("*.py"):
        text = path.read_text()
        assert "gateway_pb2" not in text and "import grpc" not in text, path
