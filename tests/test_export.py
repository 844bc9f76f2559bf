"""`genloom export`: the command, and the core's part (checks and an atomic directory), format-blind."""

import os
from pathlib import Path

import pytest
from genloom import cli, plugins, sampler
from genloom.export import export

DEBUG = ["pipeline=counting", "trainer=debug", "trainer.progress=false"]


def said(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.fixture
def run(fake_plugins, tmp_path) -> Path:
    assert cli.main(["train", *DEBUG, f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    return tmp_path / "run"


class Digits:
    """An exporting generator: writes the file it is asked for, or fails half way (``fail=True``)."""

    export_formats = ("digits",)

    def export(self, directory: Path, *, format: str, encoder=None, **options) -> list[Path]:
        unknown = set(options) - {"fail"}
        if unknown:
            raise ValueError(f"format=digits takes fail; got {', '.join(sorted(unknown))}")
        path = directory / "digits.txt"
        path.write_text(" ".join(map(str, encoder.encode("1 2 3").tolist())))
        if options.get("fail"):
            raise OSError("the disk is full")
        return [path]


def test_help_lists_export_with_its_own_help(capsys):
    assert cli.main(["--help"]) == 0
    assert "\n  export    write a checkpoint in another tool's format" in capsys.readouterr().out
    assert cli.main(["export", "--help"]) == 0
    assert "genloom export checkpoint=RUN format=hf out=merged merge=true" in capsys.readouterr().out


def test_a_generator_that_cannot_export_is_named(run, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["export", f"checkpoint={run}", "format=hf", f"out={out}"]) == 1
    assert "('bigram') cannot be exported: it writes no other tool's format" in said(capsys)
    assert not out.exists()
    assert not (Path.cwd() / ".hydra").exists()  # the export writes nothing but `out`


def test_export_is_atomic_and_never_overwrites(run, tmp_path):
    model = sampler.load(run, plugins.active(), "cpu")
    model.pipeline.generator = Digits()
    out = tmp_path / "exported"
    with pytest.raises(OSError, match="the disk is full"):
        export(model, format="digits", out=out, options={"fail": True})
    with pytest.raises(ValueError, match="format=digits takes fail; got merge"):
        export(model, format="digits", out=out, options={"merge": True})
    with pytest.raises(ValueError, match=r"cannot export format='hf'; it writes: digits\. Choose one"):
        export(model, format="hf", out=out, options={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no half directory, no staging left

    fresh = tmp_path / "fresh"
    assert export(model, format="digits", out=fresh, options={}) == [fresh / "digits.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o777 & ~umask  # the user's usual permissions

    out.mkdir()  # an empty directory is filled
    assert export(model, format="digits", out=out, options={}) == [out / "digits.txt"]
    assert (out / "digits.txt").read_text() == "1 2 3"  # the pipeline's encoder was at hand
    with pytest.raises(ValueError, match=r"already holds 1 entries \(digits.txt\); genloom export never"):
        export(model, format="digits", out=out, options={})
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        export(model, format="digits", out=tmp_path / "a_file", options={})
    assert (tmp_path / "a_file").read_text() == "mine"


def test_an_occupied_out_is_refused_before_the_checkpoint_is_read(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    # The checkpoint does not exist: the cheap check on `out` speaks first, nothing is loaded.
    assert cli.main(["export", f"checkpoint={tmp_path / 'nowhere'}", "format=hf", f"out={out}"]) == 1
    assert "already holds 1 entries (notes.md); genloom export never overwrites" in said(capsys)
    assert (out / "notes.md").read_text() == "mine"
