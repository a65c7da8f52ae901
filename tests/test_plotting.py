import matplotlib.pyplot as plt
import pytest

from helpers.plotting import savefig, use_style


def _figure():
    use_style()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 1])
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    return fig


def test_savefig_writes_identical_png_twice(tmp_path):
    fig = _figure()
    first = savefig(fig, "00_demo", "curve", directory=tmp_path).read_bytes()
    second = savefig(fig, "00_demo", "curve", directory=tmp_path).read_bytes()
    plt.close(fig)
    assert first.startswith(b"\x89PNG") and first == second
    assert b"Software" not in first and b"Creation" not in first
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_default_location_is_figures_of_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_ROOT", str(tmp_path))
    monkeypatch.delenv("WORKBENCH_OUTPUT", raising=False)
    fig = _figure()
    path = savefig(fig, "00_demo", "curve")
    assert path == tmp_path / "figures" / "00_demo" / "curve.png"
    monkeypatch.setenv("WORKBENCH_OUTPUT", "build/test-outputs")  # what make test sets: nothing tracked is touched
    assert savefig(fig, "00_demo", "curve") == tmp_path / "build" / "test-outputs" / "figures" / "00_demo" / "curve.png"
    plt.close(fig)
    assert (path.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("name", ["curve.png", "../escape", "", "a/b"])
def test_bad_names_rejected(tmp_path, name):
    fig = _figure()
    with pytest.raises(ValueError, match="figure name"):
        savefig(fig, "00_demo", name, directory=tmp_path)
    plt.close(fig)
