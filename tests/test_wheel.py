"""The grammar ships inside the wheel: build it, install it in a fresh venv, parse a spec."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_wheel_carries_the_grammar(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("bitqnn-*.whl"))
    assert "bitqnn/grammar/qspec.lark" in zipfile.ZipFile(wheel).namelist()
    venv = tmp_path / "venv"
    # dependencies come from this interpreter's site-packages; bitqnn itself only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    probe = ("import bitqnn, bitqnn.spec.grammar as g, sys; "
             "from bitqnn.spec import parse_spec; "
             "parse_spec('prove robust(q, r)', 'x.qspec'); "
             "print(bitqnn.__file__); print(g.__file__)")
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert str(venv) in done.stdout.splitlines()[0]  # imported from the wheel, not the checkout
    check = subprocess.run([str(venv / "bin" / "bitqnn"), "check", str(ROOT / "specs/digits_robust.qspec")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert check.returncode == 0, check.stderr
