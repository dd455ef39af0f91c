from dinolab import __version__
from dinolab.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "usage: dinolab" in capsys.readouterr().out


def test_kind_choices_are_the_feature_kinds() -> None:
    from dinolab import cli
    from dinolab.eval import FEATURE_KINDS

    assert cli.FEATURE_KINDS == FEATURE_KINDS
