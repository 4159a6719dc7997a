"""Smoke tests of the example scripts and of ``benchmarks/run_all.py``.

Examples run in-process (loaded by path with importlib), with tiny step counts: one Python
process imports torch and jax once for all of them. Each run must finish, print its table and
write its plot; ``--help`` must work; a bad flag or a bad ``--data`` file must end with a
one-line error on stderr (exit status 2), never a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shootout():
    return load(EXAMPLES / "estimator_shootout.py")


@pytest.fixture(scope="module")
def relax_toy():
    return load(EXAMPLES / "relax_toy.py")


@pytest.fixture(scope="module")
def common():
    return load(EXAMPLES / "common.py")


TINY_SHOOTOUT = [
    "--steps", "3", "--checkpoints", "2", "--variance-samples", "2", "--eval-samples", "2",
    "--eval-size", "16", "--batch-size", "8", "--latents", "3", "--hidden", "8", "--no-progress",
]  # fmt: skip


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


# ---- estimator shoot-out (make demo) ------------------------------------------------------


def test_shootout_every_estimator_on_pyro(shootout, tmp_path, capsys):
    results = shootout.main([*TINY_SHOOTOUT, "--backends", "pyro", "--output-dir", str(tmp_path)])
    assert [r.estimator for r in results] == list(shootout.ESTIMATORS)
    for r in results:
        assert np.isfinite([r.train_elbo, r.test_elbo, r.variance, r.steps_per_second]).all()
        assert r.train_elbo < 0 and r.test_elbo < 0  # an ELBO of binary pixels is a log-prob
        assert r.steps == [2, 3] and len(r.variance_curve) == 2
    out = capsys.readouterr().out
    labels = ("RELAX", "DisARM / ARMS", "IWAE bound (VIMCO)", "TraceGraph_ELBO (decaying avg)")
    for label in (*labels, "ELBO (nats/image)", "grad variance", "steps/s"):
        assert label in out
    assert "Recommendation (pyro, from this run): " in out
    assert (tmp_path / "estimator_shootout.png").stat().st_size > 10_000


def test_shootout_recommendation_follows_the_table(shootout):
    def run(estimator, test_elbo, speed):
        result = shootout.RunResult("pyro", estimator, test_elbo=test_elbo)
        result.steps_per_second = speed
        return result

    best, tied, far = (
        run("relax", -20.0, 5.0),
        run("sf-loo", -20.4, 400.0),
        run("reinforce", -25.0, 900.0),
    )
    (line,) = shootout.recommendations([best, tied, far])
    # the fastest within TIE_NATS (0.5) of the best test ELBO, not the fastest overall
    assert line.startswith("Recommendation (pyro, from this run): ScoreFunction, leave-one-out")
    assert "within 0.5 nats of the best (RELAX, -20.00)" in line and "80.0x" in line
    (line,) = shootout.recommendations([best, far])
    assert "RELAX" in line and "the best test ELBO" in line


def test_shootout_on_numpyro(shootout, tmp_path, capsys):
    # one of ours (with mutable baseline state), the straight-through guide (a stock ELBO) and
    # the coupled and importance-weighted estimators
    estimators = "sf-optimal,concrete-st,disarm,iwae"
    argv = [*TINY_SHOOTOUT, "--backends", "numpyro", "--estimators", estimators]
    results = shootout.main([*argv, "--output-dir", str(tmp_path)])
    assert [r.label for r in results] == [
        "ScoreFunction, optimal baseline",
        "Concrete straight-through",
        "DisARM / ARMS",
        "IWAE bound (VIMCO)",
    ]
    for r in results:
        assert np.isfinite([r.train_elbo, r.test_elbo, r.variance, r.steps_per_second]).all()
    assert (tmp_path / "estimator_shootout.png").is_file()


def test_shootout_reads_user_data(shootout, tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, train=rng.random((40, 3, 4)) < 0.5, test=rng.random((12, 12)) < 0.5)
    argv = [*TINY_SHOOTOUT, "--backends", "pyro", "--estimators", "sf-loo", "--data", str(path)]
    (result,) = shootout.main([*argv, "--output-dir", str(tmp_path)])
    assert np.isfinite(result.test_elbo)
    assert "40 train / 12 test images of 12 pixels" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "ten"], "--steps"),
        (["--estimators", "relax,bogus"], "bogus"),
        (["--backends", "tensorflow"], "tensorflow"),
        (["--particles", "1"], "--particles"),
        (["--learning-rate", "-1"], "--learning-rate"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--batch-size", "100000"], "--batch-size"),
    ],
)
def test_shootout_bad_flags_one_line(shootout, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        shootout.main(argv)
    assert exit_info.value.code == 2
    one_line_error(capsys, needle)


def bad_data_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "no such file": tmp_path / "missing.npy",
        "expected a .npy or .npz": tmp_path / "images.csv",
        "cannot read": tmp_path / "corrupt.npy",
        "binarized": tmp_path / "gray.npy",
        "one row per example": tmp_path / "flat.npy",
        "expected 'train' and 'test'": tmp_path / "two.npz",
    }
    files["expected a .npy or .npz"].write_text("0,1\n1,0\n")
    files["cannot read"].write_bytes(b"not a numpy file")
    np.save(files["binarized"], np.full((20, 4), 0.5))
    np.save(files["one row per example"], np.zeros(20))
    np.savez(files["expected 'train' and 'test'"], a=np.zeros((20, 2)), b=np.zeros((20, 2)))
    return files


def test_shootout_bad_data_one_line(shootout, tmp_path, capsys):
    for needle, path in bad_data_files(tmp_path).items():
        with pytest.raises(SystemExit) as exit_info:
            shootout.main(["--data", str(path)])
        assert exit_info.value.code == 2
        one_line_error(capsys, "--data", needle)


def test_load_binary_data_splits_and_flattens(common, tmp_path):
    path = tmp_path / "x.npy"
    images = (np.arange(50 * 6).reshape(50, 2, 3) % 3 == 0).astype(np.uint8)
    np.save(path, images)
    train, test = common.load_binary_data(path, seed=1)
    assert train.shape == (40, 6) and test.shape == (10, 6)
    # a permutation of the rows: nothing lost, nothing duplicated
    rows = sorted(map(tuple, np.concatenate([train, test])))
    assert rows == sorted(map(tuple, images.reshape(50, 6).astype(float)))


# ---- RELAX toy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend, estimators",
    [("pyro", "reinforce,sf-decaying,sf-loo,disarm,rebar,relax"), ("numpyro", "relax")],
)
def test_relax_toy_runs(relax_toy, tmp_path, capsys, backend, estimators):
    argv = ["--backend", backend, "--estimators", estimators, "--steps", "4", "--every", "2"]
    histories = relax_toy.main([*argv, "--variance-samples", "3", "--output-dir", str(tmp_path)])
    assert list(histories) == estimators.split(",")
    for history in histories.values():
        assert history["step"] == [0, 2, 4]
        # the exact objective stays within [min f, max f] = [0.499², 0.501²]
        assert all(0.499**2 <= loss <= 0.501**2 for loss in history["loss"])
        assert np.all(np.asarray(history["variance"]) >= 0)
    assert (tmp_path / f"relax_toy_{backend}.png").is_file()
    assert "optimum" in capsys.readouterr().out


def test_relax_toy_variance_ordering(relax_toy, tmp_path):
    """After one step (θ ≈ 1/2) the optimal baseline's variance is ~1e5 below REINFORCE's.

    Per sample, −ELBO's gradient in the logit ℓ is −R(b)·(b − θ) (+ the guide's own
    1e-4-scaled score, |·| ≤ 1e-4), with reward R(b) = −(b − 0.499)², −0.249 or −0.251 (the
    two values differ by 0.002). REINFORCE: g = ±R/2, so g² ≈ 0.249²/4 = 0.0155 for every
    sample (within 1%) and the sample variance is 0.0155·(1 − O(1/n)) — bounds [0.5, 1.5]×
    are loose. Optimal baseline: b* is a weighted mean of earlier rewards, all within 0.002
    of R(b), so |g| ≤ 0.002·(1/2) + 1e-4 and the variance is below 1.2e-6 — deterministic
    bounds, not statistical ones.
    """
    argv = ["--estimators", "reinforce,sf-optimal", "--steps", "1", "--every", "1"]
    histories = relax_toy.main([*argv, "--variance-samples", "100", "--output-dir", str(tmp_path)])
    expected = 0.499**4 / 4
    reinforce = histories["reinforce"]["variance"][1]
    optimal = histories["sf-optimal"]["variance"][1]
    assert 0.5 * expected < reinforce < 1.5 * expected
    assert optimal < 1.2e-6


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--backend", "jax"], "--backend"),
        (["--steps", "10", "--every", "3"], "--every"),
        (["--estimators", "reinforce,nope"], "nope"),
        (["--variance-samples", "1"], "--variance-samples"),
    ],
)
def test_relax_toy_bad_flags_one_line(relax_toy, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        relax_toy.main(argv)
    assert exit_info.value.code == 2
    one_line_error(capsys, needle)


# ---- Gamma latents and the hyperspherical VAE --------------------------------------------


@pytest.mark.parametrize(
    "backend, guides", [("pyro", "implicit,builtin,score"), ("numpyro", "implicit")]
)
def test_gamma_latent_runs(tmp_path, capsys, backend, guides):
    example = load(EXAMPLES / "gamma_latent.py")
    argv = ["--backend", backend, "--guides", guides, "--steps", "4", "--every", "2"]
    argv += ["--users", "6", "--items", "5", "--eval-particles", "2", "--variance-samples", "3"]
    histories = example.main([*argv, "--output-dir", str(tmp_path)])
    assert list(histories) == guides.split(",")
    for history in histories.values():
        assert history["step"] == [2, 4]
        # a Poisson log-likelihood per count is ≤ 0 and the KL ≥ 0, so the ELBO per count ≤ 0
        assert all(np.isfinite(e) and e <= 0 for e in history["elbo"])
        error = history["gradient_error"]
        assert (
            error["draws"] == 3
            and np.isfinite([error["difference"], error["standard_error"]]).all()
        )
    assert (tmp_path / f"gamma_latent_{backend}.png").is_file()
    out = capsys.readouterr().out
    assert "ImplicitGamma" in out and "max relative error vs mpmath" in out


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_hyperspherical_vae_runs(tmp_path, capsys, backend):
    example = load(EXAMPLES / "hyperspherical_vae.py")
    argv = ["--backend", backend, "--steps", "3", "--batch-size", "16", "--hidden", "8"]
    argv += ["--latent-dims", "3"]
    results = example.main([*argv, "--is-samples", "4", "--output-dir", str(tmp_path)])
    assert list(results) == [3] and list(results[3]) == ["svae", "nvae"]
    for result in results[3].values():
        # the IS estimate with S samples is the mean of log-mean-exp ≥ the mean log weight
        assert np.isfinite(result["elbo"]) and result["log_likelihood"] >= result["elbo"] - 1e-4
    assert results[3]["nvae"]["means"].shape == (359, 3)
    # S-VAE means are directions on the sphere
    np.testing.assert_allclose(np.linalg.norm(results[3]["svae"]["means"], axis=1), 1.0, rtol=1e-5)
    assert "S − N IW bound" in capsys.readouterr().out
    assert (tmp_path / f"hyperspherical_vae_{backend}.png").is_file()


@pytest.mark.parametrize(
    "name, argv, needle",
    [
        ("gamma_latent", ["--guides", "implicit,gamma"], "gamma"),
        ("gamma_latent", ["--steps", "10", "--every", "4"], "--every"),
        ("gamma_latent", ["--particles", "1"], "--particles"),
        ("hyperspherical_vae", ["--latent-dims", "3,1"], "--latent-dims"),
        ("hyperspherical_vae", ["--models", "svae,vae"], "vae"),
        ("hyperspherical_vae", ["--backend", "tf"], "--backend"),
    ],
)
def test_more_bad_flags_one_line(capsys, name, argv, needle):
    example = load(EXAMPLES / f"{name}.py")
    with pytest.raises(SystemExit) as exit_info:
        example.main(argv)
    assert exit_info.value.code == 2
    one_line_error(capsys, needle)


# ---- every example: --help ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["estimator_shootout", "relax_toy", "gamma_latent", "hyperspherical_vae"]
)
def test_help(name, capsys):
    example = load(EXAMPLES / f"{name}.py")
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--seed" in out


# ---- benchmarks/run_all.py ----------------------------------------------------------------


@pytest.fixture(scope="module")
def run_all():
    return load(ROOT / "benchmarks" / "run_all.py")


def test_run_all_finds_the_benchmark_scripts(run_all):
    names = [p.name for p in run_all.benchmark_scripts()]
    assert names and "common.py" not in names and "run_all.py" not in names
    assert names == sorted(names)


def test_run_all_publishes_tables_between_markers(run_all, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "b.md").write_text("## Second\n\n| x |\n|---|\n| 2 |\n")
    (results / "a.md").write_text("## First\n\n| x |\n|---|\n| 1 |\n")
    (results / "a.json").write_text(json.dumps({"rows": []}))
    (results / "a_quick.md").write_text("## Smoke run\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\n## Benchmarks\n\n{run_all.START}\nold\n{run_all.END}\ntail\n")
    run_all.publish(readme, results)
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{run_all.END}\ntail\n")
    section = text.split(run_all.START)[1].split(run_all.END)[0]
    assert section.index("### First") < section.index("### Second")  # demoted, in name order
    assert "| 1 |" in section and "| 2 |" in section and "Smoke run" not in section
    index = (results / "README.md").read_text()
    assert "### First" in index and "### Second" in index
    run_all.publish(readme, results)  # idempotent: a second run gives the same file
    assert readme.read_text() == text


def test_run_all_needs_the_markers(run_all, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="bench:start"):
        run_all.publish(readme, tmp_path)


def test_run_all_reports_failing_scripts(run_all, tmp_path):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("import sys\nprint('quick' if '--quick' in sys.argv else 'full')\n")
    bad.write_text("raise SystemExit('broken benchmark')\n")
    ok, seconds, tail = run_all.run_script(good, quick=True)
    assert ok and seconds >= 0 and tail == "quick"
    ok, _, tail = run_all.run_script(bad, quick=False)
    assert not ok and "broken benchmark" in tail
